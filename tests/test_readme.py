"""The README's Python snippets run as written (in order, sharing one namespace)."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_the_readme_python_snippets_run():
  with open(README) as f:
    snippets = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.MULTILINE | re.DOTALL)
  assert snippets, "the README has no Python snippet"
  namespace = {}
  for snippet in snippets:
    exec(compile(snippet, README, "exec"), namespace)  # pylint: disable=exec-used
