"""Connections on the wire: keepalive drops a client whose network vanished (and its streams
with it), and one connection holds at most max_streams_per_connection RPCs at once.

The vanished network is a loopback TCP proxy between client and server that, once frozen,
forwards nothing in either direction (the server's pings are swallowed, as a dead link does),
while it watches for the server closing its side."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster.server._proto import forecaster_pb2_grpc as pb_grpc
from tests.conftest import LiveServer, points, start_live_server, study_spec


class FreezableProxy:
    """Forwards loopback TCP to target until freeze(); then reads and drops both directions.
    server_closed is set when the server ends a connection it accepted through the proxy."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.frozen = threading.Event()
        self.server_closed = threading.Event()
        self.closed_at = 0.0
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if from_server and not self.server_closed.is_set():
                    self.closed_at = time.monotonic()
                    self.server_closed.set()
                return
            if not self.frozen.is_set():
                try:
                    sink.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        for s in self._sockets:
            s.close()


class HeldStream:
    """A StreamMetrics that sends one report, then nothing until release()."""

    def __init__(self, stub: pb_grpc.CurveServiceStub, run: str) -> None:
        self._release = threading.Event()
        self.responses: queue.Queue[object] = queue.Queue()
        first = pb.ReportMetricsRequest(study="conn", run=run, points=points([1, 2]))

        def requests() -> Iterator[pb.ReportMetricsRequest]:
            yield first
            self._release.wait(120)

        self.call = stub.StreamMetrics(requests(), timeout=120)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as e:
            self.responses.put(e)

    def release(self) -> None:
        self._release.set()


def wait_for(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def quick_keepalive(tmp_path) -> Iterator[LiveServer]:
    server = start_live_server(
        tmp_path / "k.db",
        models_dir="none",
        keepalive_time_s=0.5,
        keepalive_timeout_s=0.5,
        stream_idle_timeout_s=120.0,  # only keepalive can end the held stream in this test
    )
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.CurveServiceStub(ch)
        stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("conn")))
        for run in ("r0", "r1", "r2"):
            stub.StartRun(pb.StartRunRequest(study="conn", run=pb.RunSpec(name=run)))
    yield server
    server.stop()


def test_a_client_whose_network_vanished_is_dropped_with_its_stream(quick_keepalive):
    servicer = quick_keepalive.running.servicer
    proxy = FreezableProxy(quick_keepalive.address)
    try:
        with grpc.insecure_channel(proxy.address) as ch:
            held = HeldStream(pb_grpc.CurveServiceStub(ch), "r0")
            assert isinstance(held.responses.get(timeout=30), pb.StreamMetricsResponse)
            assert servicer.open_streams == 1
            # Quiet for several ping intervals: answered pings keep the connection.
            time.sleep(3.0)
            assert not proxy.server_closed.is_set() and servicer.open_streams == 1
            frozen_at = time.monotonic()
            proxy.frozen.set()
            assert proxy.server_closed.wait(15), "the server kept a connection nobody answers"
            # keepalive_time + keepalive_timeout = 1 s, far from the 120 s idle-stream timeout
            assert proxy.closed_at - frozen_at < 10
            assert wait_for(lambda: servicer.open_streams == 0, 10)
            held.release()
    finally:
        proxy.close()


def test_an_idle_connection_that_stops_answering_is_dropped_too(quick_keepalive):
    proxy = FreezableProxy(quick_keepalive.address)
    try:
        with grpc.insecure_channel(proxy.address) as ch:
            stub = pb_grpc.CurveServiceStub(ch)
            stub.GetStudy(pb.GetStudyRequest(name="conn"), timeout=10)  # connected, then idle
            time.sleep(2.0)
            assert not proxy.server_closed.is_set()
            proxy.frozen.set()
            assert proxy.server_closed.wait(15), "an idle dead connection was kept"
    finally:
        proxy.close()


def test_one_connection_holds_at_most_max_streams_per_connection(tmp_path):
    server = start_live_server(tmp_path / "s.db", models_dir="none", max_streams_per_connection=2)
    separate = [("grpc.use_local_subchannel_pool", 1)]  # each channel its own connection
    try:
        with (
            grpc.insecure_channel(server.address, options=separate) as one,
            grpc.insecure_channel(server.address, options=separate) as other,
        ):
            stub, other_stub = pb_grpc.CurveServiceStub(one), pb_grpc.CurveServiceStub(other)
            stub.CreateStudy(pb.CreateStudyRequest(study=study_spec("conn")))
            for run in ("r0", "r1"):
                stub.StartRun(pb.StartRunRequest(study="conn", run=pb.RunSpec(name=run)))
            held = [HeldStream(stub, run) for run in ("r0", "r1")]
            for h in held:
                assert isinstance(h.responses.get(timeout=30), pb.StreamMetricsResponse)
            # A third RPC on the full connection waits for a free stream...
            with pytest.raises(grpc.RpcError) as info:
                stub.GetStudy(pb.GetStudyRequest(name="conn"), timeout=1.0)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # ... while another connection is served at once,
            assert other_stub.GetStudy(pb.GetStudyRequest(name="conn"), timeout=5).study
            # and it goes on as soon as one of the two streams ends.
            waiting = stub.GetStudy.future(pb.GetStudyRequest(name="conn"), timeout=30)
            held[0].release()
            assert waiting.result().study.spec.name == "conn"
            held[1].release()
    finally:
        server.stop()
