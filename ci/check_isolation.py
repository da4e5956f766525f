"""Check that ``iv2-encoders`` installs alone, from its built wheel, into a fresh virtual environment
without deepspeed, peft, transformers or flash-attn, and that importing ``iv2_encoders`` (and running a
tiny forward) imports none of them.

    python ci/check_isolation.py [DIST_DIR]

Its iv2 dependencies (iv2-data, iv2-kernels) come from the same DIST_DIR, everything else from the index.
torch is constrained to the workspace's locked series so the check reuses uv's cache.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, run, uv

FORBIDDEN = ("deepspeed", "peft", "transformers", "flash-attn")  # distribution names

PROBE = f"""
import importlib.metadata as md, sys
import torch
import iv2_encoders
model = iv2_encoders.create_model("internvideo2-tiny")
out = model(torch.randn(1, 3, 4, 56, 56))
assert out.pooled.shape == (1, 32)
forbidden = {FORBIDDEN!r}
installed = {{d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}}
bad_installed = sorted(installed & set(forbidden))
bad_imported = sorted(m for m in (n.replace("-", "_") for n in forbidden) if m in sys.modules)
print("installed:", bad_installed, "imported:", bad_imported)
sys.exit(1 if bad_installed or bad_imported else 0)
"""


def locked_torch() -> str:
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == "torch")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dist = Path(argv[0]) if argv else ROOT / "dist"
    wheel = next(iter(sorted(dist.glob("iv2_encoders-*.whl"))), None)
    if wheel is None:
        print(f"FAIL no iv2_encoders wheel in {dist}: run ci/build.py first")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        run(uv(), "venv", "--quiet", "--python", sys.executable, str(venv))
        python = venv / "bin" / "python"
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(f"torch=={locked_torch()}\n")
        run(uv(), "pip", "install", "--quiet", "--python", str(python), "--find-links", str(dist),
            "--constraint", str(constraints), str(wheel))
        result = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
        print(result.stdout + result.stderr)
        if result.returncode:
            print("FAIL iv2-encoders pulls in or imports a heavy optional dependency")
            return 1
    print("ok: iv2-encoders installs and imports without", ", ".join(FORBIDDEN))
    return 0


if __name__ == "__main__":
    sys.exit(main())
