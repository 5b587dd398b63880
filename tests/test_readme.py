"""The README's Python example runs exactly as printed and trains."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_example(), "README.md", "exec"), namespace)
    learner = namespace["learner"]
    # it trained: the online encoder moved away from the target, which moved a little too
    online = dict(learner.online_encoder.named_parameters())
    target = dict(learner.target_encoder.named_parameters())
    assert any(not (online[k] == target[k]).all() for k in online)
    assert (tmp_path / "my_encoder.pt").is_file()
    assert 0.0 <= namespace["loss"].item() <= 8.0
