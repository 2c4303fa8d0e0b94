#!/usr/bin/env python3
"""What an administrator would script: lxml iterparse over a SupportSession body,
building one dict per session (children as keys, lists for repeated elements,
attributes kept), clearing each session after use so memory stays bounded.

Usage: python3 benches/parse_lxml.py [BODY.xml]
The body defaults to target/parse-bench-body.xml, written by `cargo bench --bench parse`.
Prints sessions, MiB and MiB/s, by wall clock and by CPU time (best of three runs).
"""

import os
import sys
import time

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


def run(path):
    count = 0
    for _, element in etree.iterparse(path, events=("end",), tag="{*}session"):
        session = to_dict(element)
        count += 1 if session is not None else 0
        element.clear()
        parent = element.getparent()
        while element.getprevious() is not None:
            del parent[0]
    return count


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/parse-bench-body.xml"
    size = os.path.getsize(path)
    best = None
    best_cpu = None
    for _ in range(3):
        started = time.perf_counter()
        started_cpu = time.process_time()
        count = run(path)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - started_cpu
        best = elapsed if best is None else min(best, elapsed)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    mib = size / (1 << 20)
    print(
        f"lxml iterparse to dicts: {count} sessions, {mib:.1f} MiB in {best:.2f} s: "
        f"{mib / best:.1f} MiB/s wall, {mib / best_cpu:.1f} MiB/s CPU time"
    )


if __name__ == "__main__":
    main()
