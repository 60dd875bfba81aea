"""The portal part of `make demo`: the network (a head office, three stores, their packages)
applied to the demo's database, the packages published, the loyalty lists sent to the stores,
and demo accounts ready to log in to `make portal` (http://127.0.0.1:8080).

The demo accounts get fixed passwords, printed at the end, so that anyone can try the portal at
once; real accounts are invited by e-mail (`campflow users add`) and choose their own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_network import FIDELITE, dated_specs, output_root  # noqa: E402

PACKAGES = ("PKG-SOLDES", "PKG-CATALOGUE", "PKG-PORTES-OUVERTES", "PKG-FIDELITE")
# login, roles, entity, e-mail, what it shows
ACCOUNTS = (
    ("marketing", ("central_operator", "reviewer"), "SIEGE", "marketing@siege.example.com",
     "the head office: decides orders, follows the lists, reads the audit log"),
    ("lyon", ("local_operator",), "LYON", "lyon@magasins.example.com",
     "the Lyon store: orders packages, approves its list"),
    ("paris", ("local_operator",), "PARIS", "paris@magasins.example.com",
     "the Paris store"),
    ("admin", ("admin",), None, "admin@siege.example.com", "sees everything, confidential operations too"),
)


def password(login: str) -> str:
    return f"{login}-demo-2026"


def campflow(*args: str, quiet: bool = False) -> int:
    if not quiet:
        print(f"\n$ campflow {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "campflow", *args], check=False,
                          stdout=subprocess.DEVNULL if quiet else None).returncode


def published() -> set[str]:
    from sqlalchemy import text

    from campflow.store import db

    with db.engine().connect() as conn:
        return set(conn.execute(text("select code from package where published_at is not null")).scalars())


def accounts_ready() -> None:
    """The demo accounts, created or reset to their demo password (running the demo twice is fine)."""
    from sqlalchemy import select

    from campflow.store import accounts, db
    from models import Account

    with db.session() as session:
        for login, roles, entity, email, _ in ACCOUNTS:
            account = session.scalar(select(Account).where(Account.login == login))
            if account is None:
                account = accounts.create(session, login, email, list(roles), entity=entity)
            account.disabled = False
            accounts.set_password(session, account, password(login))
            accounts.audit(session, None, "account_ready", login, source="cli", detail={"demo": True})


def main() -> int:
    print("\n## The network and its portal: a head office (SIEGE), three stores, four packages")
    specs = dated_specs(output_root() / "network-specs")
    if campflow("apply", str(specs)) != 0:
        return 1
    done = published()
    for package in PACKAGES:
        if package not in done and campflow("packages", "publish", package, "--as", "marketing") != 0:
            return 1
    print("\n## The loyalty programme sends each store its list to approve (in the portal)")
    if campflow("targets", "add", FIDELITE, "--where", "kind in (CLI, PRO)", quiet=True) != 0 or \
            campflow("run", FIDELITE, "--as", "marketing") != 0:
        return 1
    accounts_ready()
    print("\n## The portal: start it with `make portal` (or `campflow portal`), then open http://127.0.0.1:8080")
    width = max(len(login) for login, *_ in ACCOUNTS)
    for login, _, _, _, what in ACCOUNTS:
        print(f"  login {login:<{width}}  password {password(login):<22} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
