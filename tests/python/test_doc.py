"""doc/python.md as a test: its python blocks, in order, as one program
(the other lines blanked, so a traceback names the document's line)."""
import os


def test_python_md_runs_as_written():
    path = os.environ["PROCREG_DOC"]
    lines, inside, blocks = [], False, 0
    for line in open(path, encoding="utf-8").read().splitlines():
        if not inside and line == "```python":
            inside, blocks = True, blocks + 1
            line = ""
        elif inside and line == "```":
            inside, line = False, ""
        lines.append(line if inside else "")
    assert blocks >= 8, f"{path}: python blocks missing"
    program = compile("\n".join(lines), path, "exec")
    exec(program, {"__name__": "python_md"})
