"""The bench protocol: the pure-Python codec, and the C firmware's host build over
a pty with faults: garbage, dropped frames, garbled replies, a reset mid-run, a
version mismatch, an unplugged port, a timeout.  Every failure must be a
one-line QtcError, fast (no hang)."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from qtc.device import protocol as P
from qtc.device.build import build_host
from qtc.device.link import HostBoard, Link, open_link
from qtc.device.session import DeviceSession
from qtc.errors import QtcError

from fixtures import device_tiny_mlp as mlp

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the host firmware")


# ----------------------------------------------------------------- codec
def test_crc16_ccitt_false_check_value():
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc16(b"") == 0xFFFF


def test_frame_roundtrip_and_layout():
    raw = P.encode_frame(P.RUN, 7, P.pack_run(5, 1))
    assert raw[:2] == b"QT" and raw[2] == P.VERSION and raw[3] == P.RUN and raw[4] == 7
    assert int.from_bytes(raw[5:7], "little") == 4 and len(raw) == P.OVERHEAD + 4
    frames = P.FrameParser().feed(raw)
    assert frames == [P.Frame(P.RUN, 7, P.pack_run(5, 1))]


def test_parser_byte_by_byte_and_back_to_back():
    a, b = P.encode_frame(P.HELLO, 1), P.encode_frame(P.WRITE_INPUT, 2, P.pack_write_input(0, b"xyz"))
    p = P.FrameParser()
    got = []
    for byte in a + b:
        got += p.feed(bytes([byte]))
    assert [(f.type, f.seq) for f in got] == [(P.HELLO, 1), (P.WRITE_INPUT, 2)]


@pytest.mark.parametrize("garbage", [
    b"\x00\xffboot log: rst:0x1 (POWERON)\r\n",
    b"Q", b"QQQ", b"QT", b"QT\x01\x02",                     # partial magic / headers
    b"QT\x01\x81\x00\x00\x04",                             # a header whose length is out of range
    b"QT\x01\x81\x00\x10\x00",                             # a plausible header that swallows the real frame
])
def test_parser_resyncs_after_garbage(garbage):
    good = P.encode_frame(P.INFO, 3, b"payload")
    p = P.FrameParser()
    frames = p.feed(garbage + good + P.encode_frame(P.ACK, 4))
    assert [(f.type, f.seq, f.payload) for f in frames][:2] == [(P.INFO, 3, b"payload"), (P.ACK, 4, b"")]


def test_parser_rejects_corrupt_frame_and_counts_it():
    good = bytearray(P.encode_frame(P.OUTPUT, 9, b"\x00\x00\x00\x00abc"))
    good[-3] ^= 0x40  # flip a payload bit
    p = P.FrameParser()
    assert p.feed(bytes(good)) == []
    assert p.bad_frames == 1
    assert [f.seq for f in p.feed(P.encode_frame(P.ACK, 10))] == [10]


def test_payload_structs_roundtrip():
    info = P.Info(1, P.TIMING_EMULATED, P.HAS_CYCLES | P.HAS_INSTRET, 160_000_000, 16, 8, 32, 2**33 + 5,
                  1024, 256, 32768, "qemu-rv32", "m")
    assert P.Info.unpack(info.pack()) == info
    res = P.Result(0, 100, 1, 304, 0xBEEF, 0)
    assert P.Result.unpack(res.pack()) == res
    err = P.DeviceError(P.ERR_VERSION, 1, "protocol version mismatch")
    assert P.DeviceError.unpack(err.pack()) == err
    start, samples = P.unpack_samples(b"\x02\x00\x01\x00" + (7).to_bytes(4, "little") * 3)
    assert start == 2 and samples == [(7, 7, 7)]


# ----------------------------------------------------------- host firmware
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return mlp.write_model_dir(tmp_path_factory.mktemp("tiny_mlp"))


@pytest.fixture(scope="module")
def host_fw(model_dir, tmp_path_factory):
    return build_host(model_dir, tmp_path_factory.mktemp("fw")).artifact


class FaultyLink(Link):
    """Wraps a link: drops chosen outbound frames, corrupts chosen inbound reads."""

    def __init__(self, inner, drop_writes=(), corrupt_reads=()):
        self.inner, self.name = inner, inner.name
        self.drop_writes, self.corrupt_reads = set(drop_writes), set(corrupt_reads)
        self.nwrites = self.nreads = 0

    def write(self, data):
        self.nwrites += 1
        if self.nwrites not in self.drop_writes and "all" not in self.drop_writes:
            self.inner.write(data)

    def read(self, n, timeout):
        data = self.inner.read(n, timeout)
        if data:
            self.nreads += 1
            if self.nreads in self.corrupt_reads or "all" in self.corrupt_reads:
                k = len(data) - 3  # inside the last frame's payload/CRC: the magic stays intact
                data = data[:k] + bytes([data[k] ^ 0x20]) + data[k + 1:] if k > 0 else data
        return data


def _bench_once(session, x):
    session.write_input(x.astype(np.int8).tobytes())
    res = session.run(3, 1)
    out = np.frombuffer(session.read_output(mlp.N_OUT), np.int8)
    return res, out


def test_host_board_answers_and_is_bit_exact(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=2)
        info = s.hello()
        assert (info.board, info.model, info.input_bytes, info.output_bytes) == ("host", "tiny_mlp", 16, 8)
        assert info.timing_kind == P.TIMING_HOST and info.version == P.VERSION
        xs = mlp.test_inputs(5, seed=11)
        for x in xs:
            res, out = _bench_once(s, x)
            assert res.runs == 3 and res.unstable_runs == 0
            np.testing.assert_array_equal(out, mlp.reference(x))
        samples = s.read_samples(3)
        assert len(samples) == 3 and all(c > 0 for c, _, _ in samples)


def test_device_rejects_bad_requests_with_error_frames(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=2)
        info = s.hello()
        with pytest.raises(QtcError, match="rejected READ_OUTPUT.*no RUN result"):
            s.read_output(8)
        with pytest.raises(QtcError, match="rejected RUN.*run count"):
            s.run(info.max_runs + 1)
        with pytest.raises(QtcError, match="rejected WRITE_INPUT.*out of bounds"):
            s.request(P.WRITE_INPUT, P.pack_write_input(10, b"x" * 10), expect=P.ACK)
        with pytest.raises(QtcError, match="rejected 0x42.*unknown message type"):
            s.request(0x42, expect=P.ACK)
        s.write_input(bytes(16))  # still serving after the errors
        assert s.run(1).runs == 1


def test_garbage_on_the_line_is_skipped_both_ways(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        link.write(b"\xff\x00QTQ garbage QT\x01\x02\x03\x10\x00 more")
        s = DeviceSession(link, timeout=1)
        s.hello()
        link.write(b"QT\x01\x03\x05\x20\x00" + b"\x00" * 5)  # a truncated frame: the board drops it after a pause
        x = mlp.test_inputs(1)[0]
        _, out = _bench_once(s, x)
        np.testing.assert_array_equal(out, mlp.reference(x))


def test_board_finds_a_frame_inside_a_truncated_one(host_fw):
    # a cut-off header claiming 16 payload bytes, then a real HELLO: without the
    # look-ahead the board would wait for the rest (250 ms) and lose the HELLO
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=1)
        s.hello()
        link.write(b"QT\x01\x81\x00\x10\x00")
        t0 = time.monotonic()
        assert DeviceSession(link, retries=0).hello(connect_timeout=0.15).model == "tiny_mlp"
        assert time.monotonic() - t0 < 0.15


def test_dropped_frame_is_retried(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as raw:
        link = FaultyLink(raw, drop_writes={2})  # the first WRITE_INPUT never arrives
        s = DeviceSession(link, timeout=0.3, retries=2)
        s.hello()
        x = mlp.test_inputs(1)[0]
        _, out = _bench_once(s, x)
        np.testing.assert_array_equal(out, mlp.reference(x))
        assert link.nwrites > 4


def test_every_frame_dropped_is_a_timeout_error(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as raw:
        s = DeviceSession(FaultyLink(raw, drop_writes={"all"}), timeout=0.2, retries=1)
        t0 = time.monotonic()
        with pytest.raises(QtcError, match=r"timeout: no reply to HELLO") as exc:
            s.hello(connect_timeout=0.4)
        assert time.monotonic() - t0 < 3
        assert "\n" not in str(exc.value)


def test_garbled_replies(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as raw:
        s = DeviceSession(FaultyLink(raw, corrupt_reads={1}), timeout=0.3, retries=2)
        s.hello()  # the first reply was garbled, the retry got through
        assert s.parser.bad_frames >= 1
    with HostBoard(host_fw) as board, open_link(board.port) as raw:
        s = DeviceSession(FaultyLink(raw, corrupt_reads={"all"}), timeout=0.3, retries=1)
        with pytest.raises(QtcError, match="garbled frames from the board"):
            s.hello(connect_timeout=0.6)


def _request_bytes(*frames):
    return sum(len(f) for f in frames)


def test_reset_mid_run_is_reported_then_hello_resyncs(host_fw):
    x = mlp.test_inputs(1)[0].tobytes()
    # the board restarts once it has read HELLO + WRITE_INPUT + RUN: i.e. during the RUN
    n = _request_bytes(P.encode_frame(P.HELLO, 1), P.encode_frame(P.WRITE_INPUT, 2, P.pack_write_input(0, x)),
                       P.encode_frame(P.RUN, 3, P.pack_run(3, 1)))
    with HostBoard(host_fw, env={"QTC_HOST_BOARD_FAULT": f"reset@{n}"}) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=2)
        s.hello()
        s.write_input(x)
        with pytest.raises(QtcError, match=r"board \(host\) reset while waiting for the reply to RUN"):
            s.run(3, 1)
        # the host re-sends HELLO and carries on with the rebooted board
        s2 = DeviceSession(link, timeout=2)
        assert s2.hello().model == "tiny_mlp"
        _, out = _bench_once(s2, mlp.test_inputs(1)[0])
        np.testing.assert_array_equal(out, mlp.reference(mlp.test_inputs(1)[0]))


def test_version_mismatch_is_an_error_frame(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=1, version=P.VERSION + 1)
        with pytest.raises(QtcError, match=rf"version mismatch: the board's firmware speaks v{P.VERSION}, "
                                           rf"this qtc speaks v{P.VERSION + 1}.*reflash"):
            s.hello()


def test_unplugged_board_mid_session(host_fw):
    hello = len(P.encode_frame(P.HELLO, 1))
    with HostBoard(host_fw, env={"QTC_HOST_BOARD_FAULT": f"exit@{hello + 1}"}) as board, \
            open_link(board.port) as link:
        s = DeviceSession(link, timeout=2)
        s.hello()
        t0 = time.monotonic()
        with pytest.raises(QtcError, match="closed or unplugged|timeout"):
            s.write_input(bytes(16))
        assert time.monotonic() - t0 < 6


def test_killed_board_process_is_unplugged(host_fw):
    with HostBoard(host_fw) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=1)
        s.hello()
        board.proc.kill()
        board.proc.wait()
        with pytest.raises(QtcError, match="closed or unplugged"):
            for _ in range(3):
                s.write_input(bytes(16))


def test_hung_board_times_out(host_fw):
    hello = len(P.encode_frame(P.HELLO, 1))
    with HostBoard(host_fw, env={"QTC_HOST_BOARD_FAULT": f"hang@{hello + 1}"}) as board, \
            open_link(board.port) as link:
        s = DeviceSession(link, timeout=0.3, retries=1)
        s.hello()
        t0 = time.monotonic()
        with pytest.raises(QtcError, match="timeout: no reply to WRITE_INPUT within 0.3 s"):
            s.write_input(bytes(16))
        assert time.monotonic() - t0 < 3


def test_missing_port_is_one_line_error():
    with pytest.raises(QtcError, match="cannot open serial port /dev/ttyQTCNOPE0") as exc:
        open_link("/dev/ttyQTCNOPE0")
    assert "\n" not in exc.value.line()


def test_silent_socket_times_out():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        with open_link(f"socket://127.0.0.1:{srv.getsockname()[1]}") as link:
            with pytest.raises(QtcError, match="timeout: no reply to HELLO"):
                DeviceSession(link, timeout=0.2, retries=0).hello(connect_timeout=0.2)
    finally:
        srv.close()


# ------------------------------------------------- the ESP-IDF board on the shim
def test_esp_idf_board_code_serves_the_protocol_via_shim(model_dir, tmp_path):
    exe = build_host(model_dir, tmp_path, board="esp_idf").artifact
    with HostBoard(exe) as board, open_link(board.port) as link:
        s = DeviceSession(link, timeout=2)
        info = s.hello()
        assert info.board == "esp32c3" and info.timing_kind == P.TIMING_CYCLES and info.cpu_hz == 160_000_000
        for x in mlp.test_inputs(3, seed=5):
            _, out = _bench_once(s, x)
            np.testing.assert_array_equal(out, mlp.reference(x))


# ------------------------------------------------------------------- qtc bench
def _cli():
    import click

    from qtc.cli import QtcGroup
    from qtc.device.cli import register

    @click.group(cls=QtcGroup)
    def group():
        pass

    register(group)
    return group


def test_qtc_bench_host_writes_report(model_dir, tmp_path):
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["bench", "--target", "host", "--port", "host", "--model-dir", str(model_dir),
                                    "--runs", "300", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "bit-exact" in r.output and "host build" in r.output
    doc = json.loads((tmp_path / "bench_host.json").read_text())
    assert doc["where"]["kind"] == "host" and doc["outputs"]["checked"] == mlp.N_VECTORS
    assert doc["outputs"]["bit_exact"] is True and doc["latency_us"]["n"] == 300  # > max_runs: split in RUNs
    assert doc["arena_bytes"] == mlp.N_HID and doc["macs"] == mlp.N_IN * mlp.N_HID + mlp.N_HID * mlp.N_OUT


def test_qtc_bench_mismatch_fails_with_one_line(tmp_path):
    broken = mlp.write_model_dir(tmp_path / "broken", broken=True)
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["bench", "--target", "host", "--port", "host", "--model-dir", str(broken),
                                    "--runs", "2", "-o", str(tmp_path)])
    assert r.exit_code == 2
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "differs from the reference for input 0: byte 0" in err[0]
    doc = json.loads((tmp_path / "bench_host.json").read_text())
    assert doc["outputs"]["bit_exact"] is False and len(doc["outputs"]["mismatches"]) == mlp.N_VECTORS


def test_qtc_bench_bad_port_exits_nonzero(model_dir, tmp_path):
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["bench", "--port", "/dev/ttyQTCNOPE0", "--model-dir", str(model_dir),
                                    "-o", str(tmp_path)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "cannot open serial port" in r.output


# ------------------------------------------------------------ references
def test_no_reference_is_an_error(tmp_path):
    from qtc.device.bench import run_bench

    bare = mlp.write_model_dir(tmp_path / "bare", testvec=False)
    with pytest.raises(QtcError, match="no reference to check the board's outputs against.*--qir"):
        run_bench(target="host", port="host", model_dir=str(bare), runs=1, out_dir=str(tmp_path))


def test_graph_inputs_from_npy(quant_graph, tmp_path):
    from qtc.device.bench import graph_inputs

    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    got = graph_inputs(quant_graph, str(tmp_path / "x.npy"), 3, 0)
    q = quant_graph.tensors[quant_graph.inputs[0]].quant
    assert len(got) == 2 and got[0].dtype == np.int8
    np.testing.assert_array_equal(got[1], q.quantize(x[1]))
    np.save(tmp_path / "bad.npy", x[:, :, :4])
    with pytest.raises(QtcError, match="the model takes"):
        graph_inputs(quant_graph, str(tmp_path / "bad.npy"), 3, 0)
    rnd = graph_inputs(quant_graph, None, 3, 0)
    assert len(rnd) == 3 and all(np.array_equal(a, b) for a, b in zip(rnd, graph_inputs(quant_graph, None, 3, 0)))


def test_testvec_parser_reads_the_c_backend_header(quant_graph, tmp_path):
    pytest.importorskip("qtc.backends.c")
    from qtc.backends.c import compile_c
    from qtc.device.bench import graph_inputs, reference_from_graph, reference_from_testvec

    xs = graph_inputs(quant_graph, None, 3, 1)
    info = compile_c(quant_graph, tmp_path / "c", model_name="tiny", test_inputs=xs)
    ref = reference_from_testvec(tmp_path / "c", info["input_bytes"], info["output_bytes"])
    want = reference_from_graph(quant_graph, xs)
    assert len(ref.inputs) == 3
    for a, b in zip(ref.inputs + ref.outputs, want.inputs + want.outputs):
        np.testing.assert_array_equal(a, b)
