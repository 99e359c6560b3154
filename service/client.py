"""Streams a video's frames to the gRPC service and writes one JSON line per frame, or an annotated MP4.

    python service/client.py --video clip.mp4 --grpc 127.0.0.1:50051
    python service/client.py --video clip.mp4 --grpc 127.0.0.1:50051 --function inference --out annotated.mp4

Frames are read with OpenCV's VideoCapture (a file, or any URL it opens: rtsp://, http://),
sent as JPEGs over the LabelImageStream or InferenceStream call, and the results come back in
frame order. Each line: {"frame": n, "t": seconds into the video, "id": "n", "result": what the
plugin's function returns} or, for a frame the service could not serve, {..., "error": "<one line>"}.
--out draws the top label (labelImage) or the defect boxes (inference) on each frame instead.
"""
import argparse
import collections
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator

# Runnable as a file from any directory: `service` is imported from the repo root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run by path, this file's folder is first on sys.path, and its client.py would shadow the package
# of the same name (even with the repo on PYTHONPATH): the repo root goes first, the folder goes.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [ROOT, *(p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, _HERE))]

import cv2  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402

from core.command_line import OneLineArgumentParser  # noqa: E402
from service import defect_pb2_grpc  # noqa: E402
from service.grpc_messages import API_KEY_METADATA, API_KEY_VAR, RPCS, answer_of, read_api_key  # noqa: E402

JPEG_QUALITY = 90
GREEN, RED, WHITE, BLACK = (0, 200, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="client.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="a video file or a URL OpenCV opens (rtsp://, http://)")
    parser.add_argument("--grpc", required=True, metavar="HOST:PORT", help="the service's gRPC address")
    parser.add_argument("--function", choices=sorted(RPCS), default="labelImage",
                        help="the model to run on every frame (default labelImage)")
    options = ", ".join(f"{rpc.option} for {name}" for name, rpc in RPCS.items())
    parser.add_argument("--option", type=float, metavar="VALUE",
                        help=f"the function's option: {options} (default: the service's config)")
    parser.add_argument("--out", metavar="MP4", help="write the frames with the results drawn on them here")
    parser.add_argument("--api-key-file", metavar="FILE",
                        help=f"a file holding the service's API key, if it has one (x-api-key metadata); "
                             f"or set {API_KEY_VAR}")
    parser.add_argument("--tls-ca", metavar="PEM", help="trust this certificate (the service's, or its CA): use TLS")
    parser.add_argument("--tls-cert", metavar="PEM", help="this client's certificate, for a service with mutual TLS")
    parser.add_argument("--tls-key", metavar="PEM", help="its private key")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    args = parser.parse_args(argv)
    for option in ("tls_ca", "tls_cert", "tls_key", "api_key_file"):
        path = getattr(args, option)
        if path and not os.path.isfile(path):
            parser.error(f"--{option.replace('_', '-')} {path}: no such file")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert and not args.tls_ca:
        parser.error("--tls-cert needs --tls-ca (mutual TLS is TLS first)")
    option = RPCS[args.function].spec.option
    if option.kind is int and args.option is not None and args.option != int(args.option):
        parser.error(f"--option is {option.name} for {args.function}: a whole number, got {args.option:g}")
    return args


def frames(capture: cv2.VideoCapture, max_frames: int) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, seconds into the video, BGR frame) until the video ends."""
    index = 0
    while not max_frames or index < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        yield index, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, frame
        index += 1


def draw(frame: np.ndarray, answer: object, error: str) -> np.ndarray:
    """The frame with the result drawn on it: the top label (a list of labels), or the defect boxes and their count."""
    out = frame.copy()
    if error:
        caption, color = f"error: {error}"[:90], RED
    elif isinstance(answer, list):
        top = answer[0] if answer else {"label": "-", "confidence": 0.0}
        caption, color = f"{top['label']} ({top['confidence']:.2f})", GREEN
    else:
        for box in answer["defects"]:
            cv2.rectangle(out, (box["x"], box["y"]), (box["x"] + box["w"] - 1, box["y"] + box["h"] - 1), RED, 2)
        caption, color = f"defects: {answer['defect']}", RED if answer["defect"] else GREEN
    (width, height), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
    cv2.rectangle(out, (0, 0), (width + 12, height + baseline + 12), BLACK, -1)
    cv2.putText(out, caption, (6, height + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7, color if error else WHITE, 2)
    return out


def read_bytes(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel(address: str, tls_ca: str | None, tls_cert: str | None = None, tls_key: str | None = None) -> grpc.Channel:
    """A channel to address: TLS trusting tls_ca when given, with this client's certificate if given too."""
    if tls_ca:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(
            read_bytes(tls_ca), private_key=read_bytes(tls_key), certificate_chain=read_bytes(tls_cert)))
    return grpc.insecure_channel(address)




def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rpc = RPCS[args.function]
    capture = cv2.VideoCapture(args.video)
    if not capture.isOpened():
        print(f"client.py: {args.video} cannot be opened as a video", file=sys.stderr)
        return 2
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    sent: dict[str, tuple[int, float, np.ndarray]] = {}  # frames on their way, by id
    writer = None

    # OpenCV reads and encodes on a thread of ours, never on the one gRPC takes requests on (which
    # may still run when the call has failed): it is joined before the capture is released.
    encoded: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()

    def offer(item: tuple | None) -> bool:
        """Queue item for gRPC, unless we stop first; False then."""
        while not stop.is_set():
            try:
                encoded.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        for index, t, frame in frames(capture, args.max_frames):
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not offer((index, t, frame, jpeg.tobytes() if ok else b"")):
                return
        offer(None)  # the end of the video

    def requests() -> Iterator:
        while (item := encoded.get()) is not None:
            index, t, frame, jpeg = item
            request = rpc.request(image=jpeg, id=str(index))
            if args.option is not None:
                setattr(request, rpc.option, rpc.spec.option.kind(args.option))
            sent[request.id] = (index, t, frame if args.out else None)
            yield request

    reader = threading.Thread(target=read, name="video-reader", daemon=True)
    reader.start()
    key = read_api_key(args.api_key_file)
    metadata = [(API_KEY_METADATA, key)] if key else None
    served = failed = 0
    counts: collections.Counter = collections.Counter()
    try:
        with channel(args.grpc, args.tls_ca, args.tls_cert, args.tls_key) as ch:
            call = getattr(defect_pb2_grpc.DefectStub(ch), rpc.stream)
            for result in call(requests(), metadata=metadata):
                index, t, frame = sent.pop(result.id)
                answer = None if result.error else answer_of(result)
                served, failed = served + (not result.error), failed + bool(result.error)
                if args.out:
                    if writer is None:
                        height, width = frame.shape[:2]
                        writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                        if not writer.isOpened():
                            print(f"client.py: cannot write {args.out}", file=sys.stderr)
                            return 2
                    writer.write(draw(frame, answer, result.error))
                    counts[answer[0]["label"] if isinstance(answer, list) and answer
                           else answer["defect"] if answer else "error"] += 1
                else:
                    line = {"frame": index, "t": round(t, 3), "id": result.id}
                    line.update({"error": result.error} if result.error else {"result": answer})
                    print(json.dumps(line), flush=True)
    except grpc.RpcError as e:
        print(f"client.py: {args.grpc}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        reader.join()
        capture.release()
        if writer is not None:
            writer.release()
    if args.out:
        print(f"client.py: wrote {served + failed} frames to {args.out} "
              f"({', '.join(f'{k}: {n}' for k, n in counts.most_common(5))})", file=sys.stderr)
    return 1 if failed and not served else 0


if __name__ == "__main__":
    sys.exit(main())
