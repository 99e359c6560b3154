"""More cameras than one box: two kuiperds with the plugin split one camera topic.

Each node's stream reads `$share/defect/<topic>` (an MQTT shared subscription),
so the broker hands every frame to exactly one node. On one machine the second
kuiperd needs a /tmp of its own (the plugin's nng paths are fixed), so both
nodes here run with private ones; in production each box runs one kuiperd.
"""
import json
import shutil
import time
import uuid
from collections import Counter

from tests.support.scenarios import GRACE_SECONDS, json_or_none, surface_b64
from tools import harness

FRAMES = 60


def test_two_kuiperds_share_one_topic_each_frame_once(mosquitto, mqtt_pub, mqtt_sub, unique):
    root = harness.REPO_ROOT / "build" / f"fleet-{uuid.uuid4().hex[:8]}"
    nodes = []
    try:
        for i in range(2):
            nodes.append(harness.Kuiperd(root / f"node{i}", mosquitto.url, private_tmp=True).start())
        zip_url = (harness.REPO_ROOT / "build" / "defect.zip").resolve().as_uri()
        topic, outs = unique("frames"), []
        for i, node in enumerate(nodes):
            node.client.install_portable_plugin("defect", zip_url)
            harness.wait_until(lambda: node.client.portable_plugin_status("defect")["status"] == "running", 30,
                               what=f"plugin running on node {i}")
        # Ready before any rule: two kuiperds load their plugins' models on one machine's two cores
        # (shared with the rest of the run). A rule created while its worker still starts failed
        # here with "validate function inference error: time out", and a frame sent before the model
        # had loaded gets "inference model is still loading" after 3 s (dropped without sendError).
        for node in nodes:
            node.wait_models_loaded()
        for i, node in enumerate(nodes):
            outs.append(mqtt_sub(unique(f"node{i}")))
            node.client.create_stream(
                f'CREATE STREAM frames () WITH (DATASOURCE="$share/defect/{topic}", FORMAT="JSON")')
            # sendError: a frame that fails is an error row here, not a result that never comes.
            node.client.create_rule("count", "SELECT seq, inference(image)->defect AS defect FROM frames",
                                    [node.mqtt_action(outs[i].topic, sendSingle=True)], {"sendError": True})
            node.client.wait_rule_running("count", timeout=60)
        mosquitto.wait_subscribed(f"$share/defect/{topic}", clients=2)
        assert len({pid for node in nodes for pid in node.plugin_worker_pids("defect")}) == 2

        frames = [surface_b64(n, seed=1000 + n) for n in range(4)]
        for seq in range(FRAMES):
            mqtt_pub.publish(topic, json.dumps({"seq": seq, "image": frames[seq % 4]}).encode())
        # Every frame answered once or a row that says why: no wall-clock budget beyond a generous bound.
        harness.wait_until(lambda: sum(len(o.payloads()) for o in outs) >= FRAMES, 300,
                           what=f"{FRAMES} rows across both nodes")
        time.sleep(GRACE_SECONDS)  # a duplicate would arrive now
        errors = [p for o in outs for p in o.payloads() if json_or_none(p) is None]
        assert not errors, f"error rows: {errors[:5]}"
        rows = [[json.loads(p) for p in o.payloads()] for o in outs]
        seqs = [r["seq"] for node_rows in rows for r in node_rows]
        assert sorted(seqs) == list(range(FRAMES)), \
            f"lost {set(range(FRAMES)) - set(seqs)}, twice {[s for s, c in Counter(seqs).items() if c > 1]}"
        assert all(r["defect"] == r["seq"] % 4 for node_rows in rows for r in node_rows)
        served = [len(node_rows) for node_rows in rows]
        assert all(served), f"one node served nothing: {served}"
        print(f"fleet: {FRAMES} frames, served per node {served}")
    except BaseException:
        for i, node in enumerate(nodes):  # the nodes' logs are removed with root below
            print(f"--- node {i} kuiperd log (last 80 lines) ---\n{node.log_tail(80)}")
        raise
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
