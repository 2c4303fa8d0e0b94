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


def local(tag):
    return tag.rsplit("}", 1)[-1]


def to_dict(element):
    node = {f"@{local(k)}": v for k, v in element.attrib.items()}
    for child in element:
        value = to_dict(child)
        key = local(child.tag)
        if key in node:
            if not isinstance(node[key], list):
                node[key] = [node[key]]
            node[key].append(value)
        else:
            node[key] = value
    text = (element.text or "").strip()
    if text:
        if node:
            node["#text"] = text
        else:
            return text
    return node or None


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
