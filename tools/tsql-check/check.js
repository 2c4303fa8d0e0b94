// Parses T-SQL statements with the grammars-v4 T-SQL grammar (antlr4ts-sql) and says,
// for each, whether it parsed without a syntax error.
//
// Input on stdin: a JSON array of statement texts. Output on stdout: a JSON array with
// one entry per statement, in order: [] when it parsed, else the syntax errors as
// "line:column message" strings. The exit status is 0 whenever the input could be read,
// so the caller decides what a rejection means (it expects some, for the bad cases).
'use strict';

const { antlr4tsSQL, SQLDialect } = require('antlr4ts-sql');

function errorsOf(sql) {
  const errors = [];
  const listener = {
    syntaxError(_recognizer, _symbol, line, column, message) {
      errors.push(`${line}:${column} ${message}`);
    },
  };
  const tsql = new antlr4tsSQL(SQLDialect.TSQL);
  const parser = tsql.getParser(tsql.getTokens(sql, [listener]), [listener]);
  const tree = parser.tsql_file();
  // tsql_file ends at EOF: anything left over is already a syntax error above, but a
  // statement that the parser silently skipped would leave no trace, so check it ate all.
  if (errors.length === 0 && tree.stop && tree.stop.stopIndex + 1 < sql.trimEnd().length) {
    errors.push(`input left after offset ${tree.stop.stopIndex + 1}`);
  }
  return errors;
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  input += chunk;
});
process.stdin.on('end', () => {
  const statements = JSON.parse(input);
  process.stdout.write(JSON.stringify(statements.map(errorsOf)));
  process.stdout.write('\n');
});
