"""Where the ops tests find the real tools they run (deploy/install.sh --dev installs them):
on PATH, beside this interpreter (the virtual environment's bin: helm, hadolint) or in
/usr/sbin (Debian's buildah and debootstrap for a user without it on PATH)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def tool(name: str) -> str:
    places = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    found = shutil.which(name, path=places + os.pathsep + "/usr/sbin")
    assert found, f"{name} is missing: deploy/install.sh --dev installs it"
    return found
