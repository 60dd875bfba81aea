"""Built-in step kinds; importing this package registers them."""

from tasks.kinds import manual  # noqa: F401
from tasks.kinds import spreadsheet_export  # noqa: F401
