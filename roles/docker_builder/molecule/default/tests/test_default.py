"""docker_builder, checked on the running container: Docker answers, SAM CLI runs, and the builder script builds
the Lambda zips from the checked-out project."""

import json


def test_docker_runs_and_the_service_user_may_use_it(host):
    assert host.service("docker").is_running and host.service("docker").is_enabled
    info = host.run("runuser -u tinyllama -- docker info --format '{{json .LoggingDriver}}'")
    assert info.rc == 0, info.stderr
    assert json.loads(info.stdout) == "json-file"
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["log-opts"]["max-size"] == "20m" and daemon["live-restore"] is True


def test_sam_cli_is_the_pinned_release(host):
    out = host.run("sam --version")
    assert out.rc == 0 and out.stdout.strip() == "SAM CLI, version 1.170.0", out.stdout + out.stderr


def test_the_builder_script_builds_every_lambda_zip(host):
    out = host.run("runuser -u tinyllama -- tl-build-lambdas --no-deploy")
    assert out.rc == 0, out.stdout + out.stderr
    zips = host.run("ls /opt/tinyllama/src/build").stdout.split()
    assert sorted(zips) == sorted(
        f"{name}.zip"
        for name in ("router", "queue_health", "shape_control", "budget_killer", "cost_publisher", "cost_summary")
    )
    assert host.file("/opt/tinyllama/src/build/router.zip").user == "tinyllama"


def test_the_builder_script_refuses_bad_arguments_clearly(host):
    out = host.run("tl-build-lambdas --frobnicate")
    assert out.rc == 2 and "unknown argument '--frobnicate'" in out.stderr
    missing = host.run("TL_SOURCE_DIR=/nowhere tl-build-lambdas --no-deploy")
    assert missing.rc == 2 and "no project checkout at /nowhere" in missing.stderr
