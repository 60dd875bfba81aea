"""The built-in step kinds, one module each; `campflow.core.kinds` loads them through the
`campflow.step_kinds` entry points of pyproject.toml."""
