"""`make bench`, part 6: small files that explode, each handed to decode_image in a fresh process.

    .venv/bin/python -m bench.bombs [--code DIR] [--only TEXT]

Every crafted input of tests/support/crafted_images.py (the issue's table first: PNG decompression
bombs, a chunk flood, spaced base64; then one or more per format) goes to decode_image with
the default limits (40 Mpx, 20 MB) in its own child process, which reports the answer, the
call's wall and CPU time and how far the call raised the process's peak RSS (ru_maxrss).
--code DIR measures the image_input.py in DIR instead (e.g. an older commit's, written out
with `git show REV:image_input.py`); the child's address space is capped at 4 GB and its
run at 120 s, so the old unbounded code cannot take the box down. Writes build/bombs.json and .md.
"""
import argparse
import os

from bench.report import write_report
from tests.support.crafted_images import BOMBS, LIMITS, measure

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)


def run(code_dir: str, only: str | None) -> list[dict]:
    rows = []
    for name, (build, form, _, _) in BOMBS.items():
        if only and only.lower() not in name.lower():
            continue
        data = build()
        result = measure(data, form, LIMITS, code_dir=code_dir)
        rows.append({"input": name, "size_kb": round(len(data) / 1000), **result})
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], code_dir: str) -> str:
    lines = [f"Crafted inputs to decode_image (max_pixels={LIMITS['max_pixels']}, max_bytes={LIMITS['max_bytes']}), "
             f"code from {os.path.relpath(code_dir, REPO) if code_dir != REPO else 'this checkout'}",
             "", "| input | size | wall s | CPU s | peak RSS growth MB | answer |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        numbers = (f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['rss_growth_mb']:.0f}" if "seconds" in r
                   else "- | - | -")
        answer = r["answer"] if len(r["answer"]) <= 110 else r["answer"][:107] + "..."
        lines.append(f"| {r['input']} | {r['size_kb']} KB | {numbers} | {answer.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=REPO, help="the directory whose image_input.py is measured")
    parser.add_argument("--only", help="only the inputs whose name contains this")
    args = parser.parse_args()
    code_dir = os.path.abspath(args.code)
    rows = run(code_dir, args.only)
    name = "bombs" if code_dir == REPO else "bombs-other-code"
    write_report(name, {"code": code_dir, "limits": LIMITS, "rows": rows}, table(rows, code_dir))


if __name__ == "__main__":
    main()
