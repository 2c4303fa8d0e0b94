#!/usr/bin/env python3
"""What an administrator would write instead of `btic inspect`: lxml iterparse over a
SupportSession body, one dict per session (children as keys, lists for repeated
elements, attributes kept), printed as one JSON line each, each session cleared after
use so memory stays bounded. One run, the whole process: `benches/inspect.rs` times it
beside `btic inspect` on the same body.

Usage: python3 benches/inspect_lxml.py BODY.xml > sessions.jsonl
"""

import json
import sys

from lxml import etree

# The same dict per session as the parse comparison (this directory is on the path).
from parse_lxml import to_dict


def main():
    out = sys.stdout
    for _, element in etree.iterparse(sys.argv[1], events=("end",), tag="{*}session"):
        out.write(json.dumps(to_dict(element)))
        out.write("\n")
        element.clear()
        parent = element.getparent()
        while element.getprevious() is not None:
            del parent[0]


if __name__ == "__main__":
    main()
