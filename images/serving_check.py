"""Runs inside the serving image (standard library only): starts the image's own entrypoint + command (TorchServe
with the image's config.properties), then checks what the deployment relies on, and stops it.

    python3 serving_check.py --requests DIR [--probe JSON] -- ENTRYPOINT... CMD...

Checks: the server runs as uid 1000 (every process it starts); it loads the archive and /ping says Healthy;
a features request and a raw request (text + mp4) are answered with the inference token, a request without it
(or with another key) is refused (InvalidKeyException); the inference API listens on all interfaces, the
management and metrics APIs on 127.0.0.1 only (the listening sockets, and a refused connection to the management
port on this host's non-loopback address);
the container's output has access lines and no per-request TorchServe lines (log4j2.xml); the image's
HEALTHCHECK probe passes. Every check prints one line; the first failure stops with exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

UID = 1000
PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}
KEY_FILE = Path(os.environ.get("TS_KEY_FILE", "key_file.json"))


def ok(what: str) -> None:
    print(f"ok   {what}", flush=True)


def fail(what: str) -> None:
    print(f"FAIL {what}", flush=True)
    raise SystemExit(1)


def request(method: str, url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def listening() -> dict[int, set[str]]:
    """port -> the addresses something listens on (from /proc/net/tcp{,6}; IPv4-mapped IPv6 shown as IPv4)."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word little endian
            if len(words) == 16 and words[:12] == b"\0" * 10 + b"\xff\xff":
                words = words[12:]
            found.setdefault(int(port_hex, 16), set()).add(socket.inet_ntop(
                socket.AF_INET if len(words) == 4 else socket.AF_INET6, words))
    return found


def descendants(root: int) -> dict[int, tuple[str, int]]:
    """pid -> (command line, real uid) for every process under `root`."""
    parents, info = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"])
        info[int(entry.name)] = (cmd, int(fields["Uid"].split()[0]))
    tree, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree}
        tree.update({pid: info[pid] for pid in frontier})
    return tree


def outward_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return None


def check(args: argparse.Namespace, server: subprocess.Popen) -> None:
    base = f"http://127.0.0.1:{PORTS['inference']}"
    deadline = time.monotonic() + args.timeout
    while not KEY_FILE.is_file():
        if server.poll() is not None or time.monotonic() > deadline:
            fail(f"TorchServe wrote no {KEY_FILE} (exit code {server.poll()})")
        time.sleep(1)
    while True:  # the key file may be written in pieces: read it until it parses
        try:
            keys = {k: v["key"] for k, v in json.loads(KEY_FILE.read_text()).items()}
            break
        except (ValueError, KeyError):
            time.sleep(0.5)
    token = keys["inference"]
    while True:
        try:
            status, text = request("GET", f"{base}/ping", token=token)
            if status == 200 and json.loads(text).get("status") == "Healthy":
                break
        except (OSError, ValueError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            fail(f"/ping not Healthy within {args.timeout} s (server exit code {server.poll()})")
        time.sleep(2)
    ok(f"/ping Healthy after {args.timeout - (deadline - time.monotonic()):.0f} s (archive loaded, worker ready)")

    procs = descendants(server.pid)
    java = [p for p, (cmd, _) in procs.items() if "java" in cmd.split(" ", 1)[0]]
    workers = [p for p, (cmd, _) in procs.items() if "model_service_worker" in cmd]
    if not java or not workers:
        fail(f"expected a java frontend and a python worker among {sorted(c for c, _ in procs.values())}")
    if os.getuid() != UID or any(uid != UID for _, uid in procs.values()):
        fail(f"not all as uid {UID}: this script {os.getuid()}, the server's processes {procs}")
    ok(f"runs as uid {UID}: the frontend (java), {len(workers)} worker(s) and {len(procs) - 1 - len(workers)} more")

    for name in ("features", "raw"):
        body = (args.requests / f"{name}.json").read_bytes()
        status, text = request("POST", f"{base}/predictions/hjcag", body, token=token)
        if status != 200:
            fail(f"{name} request: {status} {text[:300]}")
        answer = json.loads(text)
        if not {"label", "probabilities", "gate", "model", "version"} <= answer.keys():
            fail(f"{name} request: unexpected answer {answer}")
        ok(f"{name} request with the token: {answer['label']}, gate {answer['gate']}")
        if name == "raw" and not (answer["gate"].get("text", 0) > 0 and answer["gate"].get("visual", 0) > 0):
            fail(f"raw request: text and video should both carry weight: {answer['gate']}")
    check_quiet_logs(Path("/tmp/torchserve.out"))
    # TorchServe 0.12 refuses a missing or wrong key with 400 or 401 and an InvalidKeyException body.
    for label, bad in (("without a token", None), ("with the management key", keys["management"])):
        status, text = request("POST", f"{base}/predictions/hjcag", (args.requests / "features.json").read_bytes(),
                               token=bad)
        if status not in (400, 401) or "InvalidKeyException" not in text:
            fail(f"request {label}: expected a refusal (InvalidKeyException), got {status} {text[:200]}")
        ok(f"request {label}: refused, {status} InvalidKeyException")

    sockets = listening()
    wildcard = {"0.0.0.0", "::"}
    if not sockets.get(PORTS["inference"], set()) & wildcard:
        fail(f"inference API not on all interfaces: {sockets.get(PORTS['inference'])}")
    for api in ("management", "metrics"):
        addrs = sockets.get(PORTS[api], set())
        if not addrs or addrs - {"127.0.0.1", "::1"}:
            fail(f"{api} API should listen on 127.0.0.1 only, listens on {addrs or 'nothing'}")
    status, _ = request("GET", f"http://127.0.0.1:{PORTS['management']}/models/hjcag", token=keys["management"])
    if status != 200:
        fail(f"management API on 127.0.0.1 answered {status}")
    outward = outward_address()
    if outward and not outward.startswith("127."):
        with socket.socket() as s:
            s.settimeout(5)
            if s.connect_ex((outward, PORTS["management"])) == 0:
                fail(f"management port {PORTS['management']} reachable on {outward}")
            s2 = socket.create_connection((outward, PORTS["inference"]), timeout=5)
            s2.close()
    ok(f"inference API on all interfaces; management and metrics on 127.0.0.1 only (refused on {outward})")

    if args.probe:
        done = subprocess.run(args.probe, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            fail(f"HEALTHCHECK {args.probe}: exit {done.returncode} {done.stdout}{done.stderr}")
        ok(f"the image's HEALTHCHECK passes: {' '.join(args.probe)}")


def check_quiet_logs(output: Path) -> None:
    """The image's log4j2.xml is in force: the requests left access lines in the container's output, and none of
    the lines TorchServe's built-in configuration writes for every request."""
    deadline = time.monotonic() + 10
    while "POST /predictions/hjcag" not in output.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.5)
    text = output.read_text(errors="replace")
    if "POST /predictions/hjcag" not in text:
        fail("no access line for the requests in the server's output (ACCESS_LOG should reach stdout)")
    per_request = ("Flushing req.cmd PREDICT", "Backend response time", "Sending response for jobId")
    noisy = [m for m in per_request if m in text]
    if noisy:
        fail(f"per-request TorchServe lines in the output ({noisy}): the image's log4j2.xml is not in force")
    ok("logs: an access line per request, none of TorchServe's per-request lines (the image's log4j2.xml)")


def stop(server: subprocess.Popen) -> None:
    """`torchserve --stop` (as kubelet's SIGTERM would end it), then whatever of the server is left, by pid: tini
    runs the server in a process group of its own, and here no container teardown reaps the java frontend."""
    started = descendants(server.pid)
    subprocess.run(["torchserve", "--stop"], capture_output=True, timeout=120, check=False)
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=Path, required=True, help="features.json and raw.json")
    parser.add_argument("--probe", type=json.loads, help="the HEALTHCHECK command, as a JSON list")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds until /ping must be Healthy")
    parser.add_argument("command", nargs="+", help="the image's entrypoint and command")
    args = parser.parse_args()

    busy = {p for p in PORTS.values() if p in listening()}
    if busy:
        fail(f"ports {sorted(busy)} are taken on this host (buildah's chroot isolation shares the host network)")
    log = open("/tmp/torchserve.out", "w")  # noqa: SIM115 (the server outlives this statement)
    server = subprocess.Popen(args.command, stdout=log, stderr=subprocess.STDOUT)
    try:
        check(args, server)
    except SystemExit:
        log.flush()
        print("--- the server's output (last 60 lines):\n" + "\n".join(
            Path("/tmp/torchserve.out").read_text(errors="replace").splitlines()[-60:]), flush=True)
        raise
    finally:
        stop(server)
    print("serving image: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
