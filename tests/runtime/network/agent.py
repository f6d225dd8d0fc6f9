"""Drives flex.runtime.network.networks in its own process, the way the containers code will (one command each).

    agent.py HOME up CID ROOTLESS(0|1) [PUBLISH...]   prepare, start workload.py as the container, attach
    agent.py HOME upown CID 0 [PUBLISH...]              the same for a container owning its network namespace
                                                         (root runner, nested Docker): its own userns makes it
    agent.py HOME release CID ROOTLESS
    agent.py HOME gc ROOTLESS [LIVE_ID...]
    agent.py HOME churn ROOTLESS N                     N x (prepare, attach, release at once), one process
    agent.py HOME badattach CID ROOTLESS               attach to a process that is no container (the agent)
Prints one JSON line. The "container" (workload.py) is started in its own session and outlives the agent.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.network.networks import NetworkRequest, Networks, parse_publish

HERE = Path(__file__).resolve().parent
# Rootless, a container runs in a user namespace of its own inside the runner's (the keeper's), as crun
# makes it for flex: the outer user namespace stands for the keeper, the inner one for the container.
NESTED_USERNS = ["unshare", "--user", "--map-root-user", "--", "unshare", "--user", "--map-root-user"]


def main() -> None:
    home = Home.open(Path(sys.argv[1]))
    cmd = sys.argv[2]
    db = MetadataDB(home.db_path)
    if cmd in ("up", "upown"):
        cid, rootless, own = sys.argv[3], sys.argv[4] == "1", cmd == "upown"
        nets = Networks(home, db, rootless=rootless)
        prepared = nets.prepare(cid, NetworkRequest("private", [parse_publish(v) for v in sys.argv[5:]], cid,
                                                    own_netns=own))
        workload = [sys.executable, str(HERE / "workload.py"), cid]
        if own:
            argv = ["unshare", "--user", "--map-root-user", "--net", *workload]
        elif rootless:
            argv = [*NESTED_USERNS, "--net", *workload]
        else:
            argv = ["nsenter", f"--net={prepared.netns_path}", *workload]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        pid = int(line[1])
        attached = nets.attach(cid, pid)
        print(json.dumps({"pid": pid, "address": attached.address, "own": own,
                          "netns": prepared.netns_path or f"/proc/{pid}/ns/net",
                          "ports": [asdict(p) for p in attached.ports],
                          "etc": {k: str(v) for k, v in prepared.etc_files.items()}}), flush=True)
        os._exit(0)
    elif cmd == "release":
        Networks(home, db, rootless=sys.argv[4] == "1").release(sys.argv[3])
        print(json.dumps({"released": sys.argv[3]}))
    elif cmd == "churn":
        rootless = sys.argv[3] == "1"
        nets = Networks(home, db, rootless=rootless)
        for i in range(int(sys.argv[4])):
            holder = subprocess.Popen([*NESTED_USERNS, "--net", "sleep", "60"]
                                      if rootless else ["sleep", "60"])
            ports = [parse_publish("0:8000"), parse_publish("0:9000/udp")]
            nets.prepare(f"churn-{i}", NetworkRequest("private", ports, "churn"))
            time.sleep(0.05 if rootless else 0)  # let unshare make the namespace before slirp4netns joins it
            nets.attach(f"churn-{i}", holder.pid)
            nets.release(f"churn-{i}")
            holder.kill()
            holder.wait()
        print(json.dumps({"churned": int(sys.argv[4])}))
    elif cmd == "badattach":
        nets = Networks(home, db, rootless=sys.argv[4] == "1")
        nets.prepare(sys.argv[3], NetworkRequest("private", [parse_publish("0:8000"), parse_publish("0:9000/udp")],
                                                 "bad"))
        try:
            nets.attach(sys.argv[3], os.getpid())
        except Exception as err:
            print(json.dumps({"error": type(err).__name__}))
        else:
            print(json.dumps({"error": None}))
    elif cmd == "gc":
        nets = Networks(home, db, rootless=sys.argv[3] == "1")
        print(json.dumps({"released": nets.gc(set(sys.argv[4:]))}))


main()
