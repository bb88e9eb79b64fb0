"""Fuzzing the real service: mutated messages to every RPC, statuses counted by code.

Starts `forecaster serve` on a loopback port (a fresh SQLite file, a tokens file with two
tenants and an admin), seeds a few studies and runs, then sends --count messages, each a
mutation of a valid request of one of the CurveService RPCs:
- raw bytes: bits flipped, cut short, bytes inserted or overwritten, overlong varints,
  length prefixes pointing past the end, two messages spliced;
- structured: fields set to extreme values (2^63-1, NaN, inf, megabyte strings, unknown enum
  values, 10^4 repeated entries, Structs with NaN, thousands of keys or deep nesting);
- tokens: missing, wrong, or another tenant's;
- StreamMetrics streams of a few mutated batches.
Every answer must be a deliberate status: UNKNOWN and INTERNAL must be 0, and the service must
still answer health SERVING at the end. Prints a table and writes it to docs/benchmarks.md.

    python benchmarks/fuzz.py [--count 100000] [--concurrency 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from forecaster.server._proto import forecaster_pb2 as pb  # noqa: E402

SERVICE = "/forecaster.v1.CurveService/"
TOKENS = {"tok-a": "team-a", "tok-b": "team-b", "tok-admin": "*"}
FORBIDDEN = ("UNKNOWN", "INTERNAL")

INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**53 + 1, 10**12 + 1, 2**63 - 1, -(2**63)]
INT32S = [0, 1, -1, 2**31 - 1, -(2**31), 1001, 10**6]
DOUBLES = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]
STRINGS = ["", "s", "r", "a/b", "../..", "team-a/s", "\u0000", "é" * 50, "x" * 129,
           "y" * 10_000, "z" * 300_000, "default", "auto", "ensemble", "linear", "*"]  # fmt: skip


def start_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    tokens = folder / "tokens"
    tokens.write_text("".join(f"{t} {tenant}\n" for t, tenant in TOKENS.items()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "forecaster.cli", "serve", "--port", "0",
         "--db", f"sqlite:///{folder / 'fuzz.db'}", "--log-level", "ERROR"],
        env={**__import__("os").environ, "FORECASTER_TOKENS_FILE": str(tokens),
             "FORECASTER_MODELS_DIR": "none", "FORECASTER_STREAM_IDLE_TIMEOUT_S": "5"},
        stdout=subprocess.PIPE, stderr=(folder / "serve.log").open("w"), text=True,
    )  # fmt: skip
    match = re.search(r":(\d+) ", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("the service did not start")
    return proc, f"127.0.0.1:{match.group(1)}"


def valid_requests() -> dict[str, list[Message]]:
    """Well-formed requests of each RPC, over the seeded studies "s" (runs "r", "r2")."""
    config = struct_pb2.Struct()
    config.update({"lr": 0.001, "layers": [1, 2, {"x": "y"}], "name": "resnet"})
    params = struct_pb2.Struct()
    params.update({"hysteresis": 2})
    spec = pb.StudySpec(name="s", metric="val_loss", direction=pb.DIRECTION_MINIMIZE,
                        max_step=1000, target=2.0,
                        policy=pb.PolicySettings(name="default", params=params))  # fmt: skip
    schedule = pb.LrSchedule(kind=pb.SCHEDULE_KIND_EXPLICIT, steps=[0, 500, 1000],
                             values=[0.1, 0.01, 0.001])  # fmt: skip
    cosine = pb.LrSchedule(kind=pb.SCHEDULE_KIND_COSINE, peak_lr=3e-4, total_steps=1000)
    pts = [pb.Point(step=s, value=2 + 3 / math.sqrt(s), lr=0.1, wall_time_s=float(s))
           for s in range(200, 220)]  # fmt: skip
    report = pb.ReportMetricsRequest(study="s", run="r", points=pts)
    return {
        "CreateStudy": [pb.CreateStudyRequest(study=spec)],
        "StartRun": [
            pb.StartRunRequest(study="s", run=pb.RunSpec(name="r3", config=config, max_step=1000)),
            pb.StartRunRequest(study="s", run=pb.RunSpec(name="r4", lr_schedule=schedule)),
        ],
        "ReportMetrics": [
            report,
            pb.ReportMetricsRequest(study="s", run="r2", points=pts, lr_schedule=cosine),
        ],  # fmt: skip
        "StreamMetrics": [report],
        "GetForecast": [
            pb.GetForecastRequest(
                study="s", run="r", at_steps=[500, 1000], quantile_levels=[0.1, 0.9], path_points=5
            )
        ],
        "GetDecision": [pb.GetDecisionRequest(study="s", run="r")],
        "FinishRun": [pb.FinishRunRequest(study="s", run="r2", state=pb.RUN_STATE_FINISHED)],
        "GetRun": [pb.GetRunRequest(study="s", run="r")],
        "ListRuns": [pb.ListRunsRequest(study="s", page_size=2)],
        "GetStudy": [pb.GetStudyRequest(name="s")],
        "ListStudies": [pb.ListStudiesRequest(page_size=1)],
        "ForecastCurve": [
            pb.ForecastCurveRequest(
                points=pts, direction=pb.DIRECTION_MINIMIZE, max_step=1000, at_steps=[1000]
            )
        ],  # fmt: skip
    }


def seed(address: str) -> None:
    """Studies "s" (runs "r" and "r2" with points) for each tenant, so reads reach real runs."""
    with grpc.insecure_channel(address) as channel:
        create = channel.unary_unary(SERVICE + "CreateStudy")
        start = channel.unary_unary(SERVICE + "StartRun")
        report = channel.unary_unary(SERVICE + "ReportMetrics")
        for token in TOKENS:
            md = (("authorization", f"Bearer {token}"),)
            spec = pb.StudySpec(name="s", metric="val_loss", direction=pb.DIRECTION_MINIMIZE,
                                max_step=1000, target=2.0)  # fmt: skip
            create(pb.CreateStudyRequest(study=spec).SerializeToString(), metadata=md)
            for run in ("r", "r2"):
                start(pb.StartRunRequest(study="s", run=pb.RunSpec(name=run)).SerializeToString(),
                      metadata=md)  # fmt: skip
                pts = [pb.Point(step=s, value=2 + 3 / math.sqrt(s)) for s in range(1, 150)]
                request = pb.ReportMetricsRequest(study="s", run=run, points=pts)
                report(request.SerializeToString(), metadata=md)


# -- mutations ------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random, other: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(8)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # cut short
        del b[rng.randrange(len(b)) :]
    elif op == 2:  # insert random bytes
        at = rng.randint(0, len(b))
        b[at:at] = rng.randbytes(rng.randint(1, 16))
    elif op == 3 and b:  # overwrite a slice
        at = rng.randrange(len(b))
        b[at : at + 8] = rng.randbytes(8)
    elif op == 4:  # an overlong varint for a random field number
        b += bytes([rng.randint(1, 15) << 3]) + b"\xff" * 10 + b"\x01"
    elif op == 5:  # a length prefix pointing past the end
        b += bytes([(rng.randint(1, 15) << 3) | 2]) + b"\xff\xff\xff\x7f" + b"ab"
    elif op == 6:  # splice two messages
        b = b[: rng.randint(0, len(b))] + bytearray(other[rng.randint(0, len(other)) :])
    else:  # pure noise
        b = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(b)


def extreme_struct(rng: random.Random) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    kind = rng.randrange(4)
    if kind == 0:
        s.update({"x": rng.choice([math.nan, math.inf, -math.inf])})
    elif kind == 1:
        s.update({f"k{i}": i for i in range(rng.choice([1001, 3000]))})
    elif kind == 2:
        inner: dict[str, Any] = {"leaf": math.nan if rng.random() < 0.5 else 1}
        for _ in range(rng.randint(10, 60)):
            inner = {"d": inner}
        s.update(inner)
    else:
        s.update({"blob": "b" * rng.choice([70_000, 500_000])})
    return s


def set_extreme(message: Message, rng: random.Random, depth: int = 0) -> None:
    """Sets one field, somewhere in message, to an extreme value."""
    fields = message.DESCRIPTOR.fields
    if not fields:
        return
    f = rng.choice(fields)
    if f.message_type is not None and f.message_type.full_name == "google.protobuf.Struct":
        target = getattr(message, f.name)
        if f.is_repeated:
            return
        target.CopyFrom(extreme_struct(rng))
        return
    if f.is_repeated:
        container = getattr(message, f.name)
        n = rng.choice([0, 1, 100, 1001, 10_001, 20_000])
        if f.message_type is not None:
            del container[:]
            for i in range(min(n, 20_000)):
                item = container.add()
                if f.message_type.name == "Point":
                    item.step = rng.choice([i, -i, 2**63 - 1 - i, i * 7])
                    item.value = rng.choice(DOUBLES) if rng.random() < 0.2 else 1.0 / (i + 1)
                elif depth < 3:
                    set_extreme(item, rng, depth + 1)
        elif f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            container[:] = [rng.choice(DOUBLES) for _ in range(min(n, 20_000))]
        else:
            container[:] = [rng.choice(INTS) for _ in range(min(n, 20_000))]
        return
    if f.message_type is not None:
        if depth < 4:
            set_extreme(getattr(message, f.name), rng, depth + 1)
        return
    if f.enum_type is not None:
        setattr(message, f.name, rng.choice([0, 1, 2, 3, 4, 5, 99, -1, 2**31 - 1]))
    elif f.type == FieldDescriptor.TYPE_STRING:
        setattr(message, f.name, rng.choice(STRINGS))
    elif f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        setattr(message, f.name, rng.choice(DOUBLES))
    elif f.type == FieldDescriptor.TYPE_BOOL:
        setattr(message, f.name, rng.random() < 0.5)
    elif f.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        setattr(message, f.name, rng.choice(INT32S))
    else:
        setattr(message, f.name, rng.choice(INTS))


def mutated(method: str, valid: dict[str, list[Message]], rng: random.Random) -> bytes:
    base = rng.choice(valid[method])
    if rng.random() < 0.5:
        other = rng.choice(valid[rng.choice(list(valid))]).SerializeToString()
        return mutate_bytes(base.SerializeToString(), rng, other)
    message = type(base)()
    message.CopyFrom(base)
    for _ in range(rng.randint(1, 3)):
        set_extreme(message, rng)
    return message.SerializeToString()


def metadata_for(rng: random.Random) -> tuple[tuple[str, str], ...]:
    roll = rng.random()
    if roll < 0.05:
        return ()
    if roll < 0.10:
        return (("authorization", rng.choice(["Bearer nope", "tok-a", "Basic x", "Bearer "])),)
    return (("authorization", f"Bearer {rng.choice(list(TOKENS))}"),)


# -- the run --------------------------------------------------------------------------------


async def fuzz(
    address: str,
    count: int,
    concurrency: int,
    seed_value: int,
    time_limit_s: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[collections.Counter[tuple[str, str]], list[str], int]:
    """(method, code) counts, examples of forbidden codes, messages sent."""
    valid = valid_requests()
    methods = list(valid)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    bad: list[str] = []
    sent = 0
    deadline = time.monotonic() + time_limit_s
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        unary = {m: channel.unary_unary(SERVICE + m) for m in methods if m != "StreamMetrics"}
        blocking = grpc.insecure_channel(address, options=options)
        stream = blocking.stream_stream(SERVICE + "StreamMetrics")

        def sync_stream(batch: list[bytes], md: tuple[tuple[str, str], ...]) -> None:
            for _ in stream(iter(batch), metadata=md, timeout=30):
                pass

        async def one(worker: int) -> None:
            nonlocal sent
            rng = random.Random(seed_value * 1_000_003 + worker)
            while sent < count and time.monotonic() < deadline:
                method = rng.choice(methods)
                md = metadata_for(rng)
                try:
                    if method == "StreamMetrics":
                        batch = [mutated(method, valid, rng) for _ in range(rng.randint(1, 4))]
                        sent += len(batch)
                        # The blocking client in a thread: the aio client reports its own
                        # INTERNAL ("Internal error from Core") when the service answers a
                        # stream before reading all of it, and the service said otherwise.
                        await asyncio.to_thread(sync_stream, batch, md)
                    else:
                        payload = mutated(method, valid, rng)
                        sent += 1
                        await unary[method](payload, metadata=md, timeout=30)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                    if code in FORBIDDEN and len(bad) < 20:
                        bad.append(f"{method} {code}: {e.details()[:200]}")
                counts[(method, code)] += 1
                if progress is not None:
                    progress(sent)

        try:
            await asyncio.gather(*(one(w) for w in range(concurrency)))
        finally:
            blocking.close()
    return counts, bad, sent


def still_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return check.status == health_pb2.HealthCheckResponse.SERVING


def run(
    count: int, concurrency: int, seed_value: int, time_limit_s: float, show: bool
) -> dict[str, Any]:
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(Path(tmp))
        try:
            seed(address)
            bar = tqdm(total=count, unit="msg", disable=not show, file=sys.stderr)
            last = [0]

            def progress(n: int) -> None:
                if n - last[0] >= 500:
                    bar.update(n - last[0])
                    last[0] = n

            start = time.monotonic()
            counts, bad, sent = asyncio.run(
                fuzz(address, count, concurrency, seed_value, time_limit_s, progress)
            )
            seconds = time.monotonic() - start
            bar.close()
            serving = still_serving(address) and proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(30)
        # The service's errors (JSON lines with a traceback): what an INTERNAL came from.
        errors = [
            line for line in (Path(tmp) / "serve.log").read_text().splitlines() if '"exc"' in line
        ]
    return {
        "counts": counts, "bad": bad, "sent": sent, "seconds": seconds, "serving": serving,
        "errors": errors,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages to send")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit-s", type=float, default=1800.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    result = run(args.count, args.concurrency, args.seed, args.time_limit_s, show=True)
    counts: collections.Counter[tuple[str, str]] = result["counts"]
    by_code = collections.Counter()
    for (_, code), n in counts.items():
        by_code[code] += n
    codes = sorted(by_code, key=lambda c: -by_code[c])
    rows = [[code, by_code[code]] for code in codes]
    table = markdown_table(["status", "calls"], rows)
    methods = sorted({m for m, _ in counts})
    per_method = markdown_table(
        ["method", *codes], [[m, *(counts[(m, c)] for c in codes)] for m in methods]
    )
    forbidden = sum(by_code[c] for c in FORBIDDEN)
    body = (
        "## Fuzzing (`python benchmarks/fuzz.py`)\n\n"
        f"{result['sent']:,} mutated messages (raw-byte and structured mutations of valid "
        f"requests to every RPC, {sum(by_code.values()):,} calls, streams included; 10% with "
        f"a missing or wrong token) to the real service over loopback in {result['seconds']:.0f} s "
        f"(seed {args.seed}, {args.concurrency} concurrent callers). UNKNOWN + INTERNAL: "
        f"**{forbidden}**; health SERVING at the end: **{result['serving']}**.\n\n"
        f"{table}\n\nBy method:\n\n{per_method}\n"
    )
    print(body)
    for line in result["bad"]:
        print("forbidden:", line)
    for line in result["errors"][:5]:
        print("service error:", line[:3000])
    if not args.no_write:
        print(f"written to {write_section('fuzz', body)}")
    return 0 if forbidden == 0 and result["serving"] else 1


if __name__ == "__main__":
    sys.exit(main())
