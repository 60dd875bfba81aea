"""Built-in step kinds; importing this package registers them."""

from tasks.kinds import document_mailing  # noqa: F401
from tasks.kinds import emailing  # noqa: F401
from tasks.kinds import faxing  # noqa: F401
from tasks.kinds import label_mailing  # noqa: F401
from tasks.kinds import local_approval  # noqa: F401
from tasks.kinds import manual  # noqa: F401
from tasks.kinds import phoning  # noqa: F401
from tasks.kinds import spreadsheet_export  # noqa: F401
