"""Built-in step kinds; importing this package registers them."""

from tasks.kinds import manual  # noqa: F401
