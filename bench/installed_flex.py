"""The `flex` command as users run it, for whole-process benchmarks: like for like with a compiled anchor.

Users run /usr/local/bin/flex -> /opt/flex/venv/bin/flex (installer/lib/deploy.sh): a virtualenv on the
system's /usr/bin/python3 with flex installed into it (not editable), so start-up pays for neither an
editable install's import finder in ``site`` nor a development interpreter (this VM's .venv is a pyenv
build). This makes the same thing under a benchmark's work directory: a venv on /usr/bin/python3, the
checkout's ``flex`` package copied in and compiled, the console script pip writes, and the development
venv's site-packages on the path (a plain directory entry: its .pth files are not run) for dependencies.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

__all__ = ["installed_flex"]

_SCRIPT = """#!{python}
import sys
from flex.cli.main import main
if __name__ == '__main__':
    sys.exit(main())
"""


def installed_flex(repo: Path, work: Path, system_python: str = "/usr/bin/python3") -> Path:
    """Make ``work/venv`` and return its ``bin/flex``; readable and runnable by every user."""
    venv = work / "venv"
    subprocess.run([system_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    shutil.copytree(repo / "flex", site / "flex", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(python), "-m", "compileall", "-q", str(site / "flex")], check=True,
                   stdout=subprocess.DEVNULL)
    (site / "flex-bench-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = venv / "bin" / "flex"
    script.write_text(_SCRIPT.format(python=python))
    script.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return script
