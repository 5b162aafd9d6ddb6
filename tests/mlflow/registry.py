#!/usr/bin/env python3
"""A real MLflow tracking server and model registry for batchscore's integration tests.

Run it with the Python of the virtualenv that scripts/install-mlflow.sh makes
(.venv-mlflow/bin/python). Subcommands:

  serve --port P --dir D [--workers N] [--timeout S] [--auth-admin-password PW]
        [--stop-on-stdin-eof]
      Starts `mlflow server` on 127.0.0.1:P with a SQLite store (D/mlflow.db) and proxied
      artifacts (--serve-artifacts, stored under D/artifacts), waits until its REST API
      answers, prints `ready http://127.0.0.1:P` on stdout and stays in the foreground until
      it is killed. The server runs in its own process group under a small supervisor that
      kills that whole group (uvicorn and its workers) when this process ends, by a signal
      or by SIGKILL (the supervisor sees its stdin pipe close). Server logs: D/server.log.
      --auth-admin-password runs MLflow's basic-auth app (user "admin"); the other
      subcommands then need MLFLOW_TRACKING_USERNAME=admin and MLFLOW_TRACKING_PASSWORD.

  register --uri URL --name NAME --model PATH.onnx [--alias ALIAS] [--experiment E]
           [--single-file] [--not-onnx]
      Logs the ONNX model with mlflow.onnx.log_model into a new run (as a team would),
      registers it as a new version of NAME, optionally points ALIAS at it, and prints JSON:
      {"name", "version", "alias", "source", "run_id", "model_id", "storage_location",
       "artifact_uri", "artifacts", "sha256_of_model_onnx", "batchscore_sha256"}; "artifacts"
      lists the files the server holds for the version; the sha256 is of model.onnx as stored,
      downloaded back through the server's artifact proxy; "batchscore_sha256" is the one
      batchscore records (model.onnx with its external-data files, see src/model/files.rs).
      --not-onnx logs a python_function model instead: a version with no ONNX file. mlflow.onnx.log_model's default save_as_external_data=True is
      kept (tensors >= 1 KiB go to a side file with a uuid name); --single-file turns it off.

  alias --uri URL --name NAME --alias ALIAS --version V     set/move an alias
  delete-alias --uri URL --name NAME --alias ALIAS          delete an alias

Every subcommand keeps MLflow's telemetry off and everything on 127.0.0.1.
"""

import argparse
import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

# Nothing here may reach the internet: MLflow's usage telemetry is on by default.
_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # The server would otherwise start a huey job-runner process (used for GenAI jobs).
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
os.environ.update(_OFFLINE_ENV)


def _die(msg, code=1):
    print(f"registry.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------------------------------- serve


def _probe(url, password=None):
    """True once the REST API (and its SQL store) answers."""
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/get?experiment_id=0")
    if password:
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _supervise(args):
    """Runs as the leader of a new process group: starts the server in that group and kills
    the whole group when its stdin (a pipe held by `serve`) closes or the server exits."""
    # A no-op handler (not SIG_IGN, which exec'd children would inherit): the group gets
    # SIGTERM from kill_group() below, and so may this process from outside; either way it
    # is this process that finishes the cleanup, with SIGKILL for what is left.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    args.auth_admin_password = (
        os.environ.pop("_REGISTRY_AUTH_ADMIN_PASSWORD", None) if args.auth_admin_password_env else None
    )
    log = open(os.path.join(args.dir, "server.log"), "ab", buffering=0)
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"),
        "server",
        "--host", "127.0.0.1",
        "--port", str(args.port),
        "--workers", str(args.workers),
        "--backend-store-uri", "sqlite:///" + os.path.join(args.dir, "mlflow.db"),
        "--serve-artifacts",
        "--artifacts-destination", os.path.join(args.dir, "artifacts"),
    ]
    env = dict(os.environ)
    if args.auth_admin_password:
        # MLflow's basic-auth app: users in D/basic_auth.db (its ini's relative sqlite path,
        # cwd is D), admin user "admin" created with this password on first start.
        cmd += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = args.auth_admin_password
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", "batchscore-tests")
    log.write(("+ " + " ".join(cmd) + "\n").encode())
    server = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=args.dir, env=env
    )
    once = threading.Lock()

    def kill_group(why):
        if not once.acquire(blocking=False):
            return
        log.write(f"registry.py: stopping the server group ({why})\n".encode())
        try:
            os.killpg(0, signal.SIGTERM)  # mlflow cli, uvicorn and its workers
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)  # let uvicorn's own children finish exiting
        os.killpg(0, signal.SIGKILL)  # whatever is left, this supervisor included

    def watch_server():
        rc = server.wait()
        kill_group(f"mlflow server exited with {rc}")

    threading.Thread(target=watch_server, daemon=True).start()
    try:
        while sys.stdin.buffer.read1(4096):
            pass
    except OSError:
        pass
    kill_group("serve went away")


def _serve(args):
    args.dir = os.path.abspath(args.dir)
    os.makedirs(os.path.join(args.dir, "artifacts"), exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    if _probe(url, args.auth_admin_password):
        _die(f"something already answers on {url}")
    extra = ["--auth-admin-password-env"] if args.auth_admin_password else []
    env = dict(os.environ)
    if args.auth_admin_password:
        env["_REGISTRY_AUTH_ADMIN_PASSWORD"] = args.auth_admin_password  # not on a command line
    sup = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_supervise",
         "--port", str(args.port), "--dir", args.dir, "--workers", str(args.workers)] + extra,
        stdin=subprocess.PIPE,
        env=env,
        start_new_session=True,  # own session and process group: killpg reaches all of it
    )

    def stop(*_):
        try:
            sup.stdin.close()  # the supervisor kills its group
        except OSError:
            pass
        # Poll rather than sup.wait(): this handler may interrupt a wait on sup in the main
        # thread, whose lock a nested wait(timeout) could not take until it timed out.
        deadline = time.monotonic() + 15
        while sup.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if sup.poll() is None:
            try:
                os.killpg(sup.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    deadline = time.monotonic() + args.timeout
    while not _probe(url, args.auth_admin_password):
        if sup.poll() is not None:
            _tail_log(args.dir)
            _die(f"mlflow server exited before answering on {url} (log: {args.dir}/server.log)")
        if time.monotonic() > deadline:
            _tail_log(args.dir)
            sup.stdin.close()
            sup.wait(timeout=15)
            _die(f"mlflow server did not answer on {url} within {args.timeout}s")
        time.sleep(0.25)
    print(f"ready {url}", flush=True)
    if args.stop_on_stdin_eof:
        # The caller holds our stdin: when it exits, however it exits, the pipe closes and the
        # server goes with it (a test process's shared server is never dropped).
        def watch_stdin():
            try:
                while sys.stdin.buffer.read1(4096):
                    pass
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch_stdin, daemon=True).start()
    while sup.poll() is None:
        time.sleep(0.2)
    _die(f"mlflow server on {url} exited unexpectedly (log: {args.dir}/server.log)")


def _tail_log(d, n=30):
    try:
        with open(os.path.join(d, "server.log"), errors="replace") as f:
            lines = f.readlines()[-n:]
        sys.stderr.write("".join("  | " + ln for ln in lines))
    except OSError:
        pass


# ------------------------------------------------------------------------------ registry


def _client(uri):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow, MlflowClient(tracking_uri=uri, registry_uri=uri)


def _register(args):
    if not args.not_onnx and not os.path.isfile(args.model):
        _die(f"no such model file: {args.model}")
    # MLflow prints "View run ... at: URL" lines on stdout when a run ends; stdout carries
    # only the JSON result, so everything MLflow says goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = _register_quietly(args)
    print(json.dumps(result), flush=True)


def _register_quietly(args):
    import onnx

    mlflow, client = _client(args.uri)
    import mlflow.onnx  # noqa: F401
    from mlflow.artifacts import download_artifacts, list_artifacts

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"register-{args.name}") as run:
        if args.not_onnx:
            # A version without an ONNX file: a python_function model, as a team might log.
            info = mlflow.pyfunc.log_model(
                name="model", python_model=_Constant(), registered_model_name=args.name
            )
        else:
            info = mlflow.onnx.log_model(
                onnx.load(args.model),
                name="model",
                registered_model_name=args.name,
                save_as_external_data=not args.single_file,
            )
    version = str(info.registered_model_version)
    if args.alias:
        client.set_registered_model_alias(args.name, args.alias, version)
    mv = client.get_model_version(args.name, version)
    # mlflow-artifacts:/<experiment>/models/<model_id>/artifacts for a proxied server
    artifact_uri = client.get_model_version_download_uri(args.name, version)
    # list_artifacts names files relative to the folder above artifact_uri ("artifacts/x")
    base = artifact_uri.rstrip("/").rsplit("/", 1)[-1] + "/"
    files = sorted(
        f.path[len(base):] if f.path.startswith(base) else f.path
        for f in list_artifacts(artifact_uri=artifact_uri, tracking_uri=args.uri)
    )
    sha = combined = None
    if not args.not_onnx:
        with tempfile.TemporaryDirectory() as tmp:
            local = download_artifacts(artifact_uri=artifact_uri, dst_path=tmp, tracking_uri=args.uri)
            with open(os.path.join(local, "model.onnx"), "rb") as f:
                model_bytes = f.read()
            sha = hashlib.sha256(model_bytes).hexdigest()
            combined = _batchscore_sha256(local, model_bytes)

    return {
        "name": args.name,
        "version": version,
        "alias": args.alias,
        "source": mv.source,
        "run_id": mv.run_id or run.info.run_id,
        "model_id": getattr(mv, "model_id", None) or info.model_id,
        "storage_location": getattr(mv, "storage_location", None),
        "artifact_uri": artifact_uri,
        "artifacts": files,
        "sha256_of_model_onnx": sha,
        "batchscore_sha256": combined,
    }


def _batchscore_sha256(folder, model_bytes):
    """The sha256 batchscore records for a model (src/model/files.rs), computed independently:
    the ONNX file's bytes, then for each external-data file it names, in name order, NUL, the
    name, NUL, the file's bytes."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    proto = onnx.ModelProto.FromString(model_bytes)  # external data stays where it is
    names = sorted({ExternalDataInfo(t).location for t in proto.graph.initializer if uses_external_data(t)})
    h = hashlib.sha256(model_bytes)
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            h.update(b"\0" + name.encode() + b"\0" + f.read())
    return h.hexdigest()


try:
    import mlflow.pyfunc as _pyfunc

    class _Constant(_pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0] * len(model_input)
except ImportError:  # only `register --not-onnx` needs it
    pass


def _alias(args):
    with contextlib.redirect_stdout(sys.stderr):
        _, client = _client(args.uri)
    client.set_registered_model_alias(args.name, args.alias, str(args.version))
    print(json.dumps({"name": args.name, "alias": args.alias, "version": str(args.version)}))


def _delete_alias(args):
    with contextlib.redirect_stdout(sys.stderr):
        _, client = _client(args.uri)
    client.delete_registered_model_alias(args.name, args.alias)
    print(json.dumps({"name": args.name, "alias": args.alias, "deleted": True}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run an MLflow server on 127.0.0.1 in the foreground")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--dir", required=True, help="folder for mlflow.db, artifacts/, server.log")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--timeout", type=float, default=120, help="seconds to wait for it to answer")
    s.add_argument("--auth-admin-password", metavar="PW",
                   help="run MLflow's basic-auth app, user 'admin' with password PW "
                        "(clients: MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=PW)")
    s.add_argument("--stop-on-stdin-eof", action="store_true",
                   help="stop the server when stdin closes (the caller exited)")
    s.set_defaults(func=_serve)

    s = sub.add_parser("_supervise", help=argparse.SUPPRESS)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--auth-admin-password-env", action="store_true")
    s.set_defaults(func=_supervise)

    s = sub.add_parser("register", help="log an ONNX model and register it as a new version")
    s.add_argument("--uri", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--alias")
    s.add_argument("--experiment", default="batchscore-tests")
    s.add_argument("--not-onnx", action="store_true",
                   help="log a python_function model instead (a version with no ONNX file); --model is ignored")
    s.add_argument("--single-file", action="store_true",
                   help="log_model(save_as_external_data=False)")
    s.set_defaults(func=_register)

    s = sub.add_parser("alias", help="point ALIAS at version V")
    s.add_argument("--uri", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--alias", required=True)
    s.add_argument("--version", required=True)
    s.set_defaults(func=_alias)

    s = sub.add_parser("delete-alias", help="delete ALIAS")
    s.add_argument("--uri", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--alias", required=True)
    s.set_defaults(func=_delete_alias)

    args = p.parse_args()
    if args.cmd in ("register", "alias", "delete-alias"):
        try:
            args.func(args)
        except Exception as e:  # MlflowException, connection errors: one clear line
            _die(f"{args.cmd}: {type(e).__name__}: {e}")
    else:
        args.func(args)


if __name__ == "__main__":
    main()
