"""The base role, checked on the running container."""


def test_port_22_is_closed_and_sshd_masked(host):
    assert not host.socket("tcp://0.0.0.0:22").is_listening
    assert not host.socket("tcp://:::22").is_listening
    assert host.run("systemctl is-enabled ssh.service").stdout.strip() == "masked"


def test_the_service_user_has_no_login_shell(host):
    user = host.user("tinyllama")
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/opt/tinyllama"
    assert host.file("/opt/tinyllama").mode == 0o750


def test_security_upgrades_run_daily(host):
    assert host.package("unattended-upgrades").is_installed
    config = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in config


def test_time_sync_is_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled
