"""Where a bench writes its results: build/<name>.json (the numbers) and build/<name>.md (the table)."""
import json
import os

BUILD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build")


def write_report(name: str, result: object, table: str) -> None:
    """Print the table and write it, with the result as JSON, under build/."""
    print(table)
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(BUILD, f"{name}.md"), "w") as f:
        f.write(table)
    print(f"wrote build/{name}.json and build/{name}.md")
