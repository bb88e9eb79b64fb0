"""Regenerates the Python code of the wire contract from proto/forecaster/v1/*.proto.

Run from anywhere: ``python proto/generate.py`` (or ``make proto``). Needs the `dev` extra
(grpcio-tools). The output is committed; tests/server/test_proto_generated.py regenerates into a
temporary folder and fails when the committed files differ.

protoc writes ``from forecaster.v1 import forecaster_pb2``, which would resolve against our own
``forecaster`` package; the imports are rewritten to be relative to the output folder.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
# The service and the trainer-side client (its own distribution) carry the same generated code.
TARGETS = [
    REPO_ROOT / "forecaster" / "server" / "_proto",
    REPO_ROOT / "trainer_plugins" / "forecaster_client" / "_proto",
]
_IMPORT = re.compile(r"^from forecaster\.v1 import (\w+_pb2)", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Writes the generated modules into out_dir and returns their paths."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("forecaster/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed; see the message above")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((Path(tmp) / "forecaster" / "v1").iterdir()):
            text = _IMPORT.sub(r"from . import \1", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
        init = out_dir / "__init__.py"
        init.write_text(
            '"""Generated from proto/forecaster/v1 by proto/generate.py. Do not edit."""\n'
        )
        written.append(init)
    return written


def main() -> None:
    for target in TARGETS:
        for path in generate(target):
            print(f"wrote {path.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
