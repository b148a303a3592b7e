"""nginx_tls with its defaults (no public door), checked on the running container: loopback only, TLS versions,
HSTS, streaming through the proxy, no door's check. The public door is checked with the whole node
(molecule/node), where tl-door comes with the agent's package."""


def openssl(host, flags):
    return host.run(f"echo | timeout 10 openssl s_client -connect 127.0.0.1:443 {flags} 2>&1")


def test_without_the_public_door_nginx_listens_on_loopback_443_only(host):
    assert host.service("nginx").is_running
    listening = host.socket.get_listening_sockets()
    assert "tcp://127.0.0.1:443" in listening
    public = [s for s in listening if s.startswith("tcp://") and not s.startswith(("tcp://127.", "tcp://::1"))]
    assert public == [], public
    assert not host.file("/etc/systemd/system/tl-door.service").exists


def test_tls_1_2_and_1_3_are_served_and_1_1_is_refused(host):
    assert "TLSv1.3" in openssl(host, "-tls1_3").stdout
    assert "TLSv1.2" in openssl(host, "-tls1_2").stdout
    # SECLEVEL=0 lets this client offer TLS 1.1, so a refusal is the server's.
    refused = openssl(host, "-tls1_1 -cipher DEFAULT@SECLEVEL=0")
    assert "Cipher is (NONE)" in refused.stdout or "alert protocol version" in refused.stdout


def fetch(host, code):
    prelude = "import ssl,time,urllib.request as u; c=ssl._create_unverified_context(); t=time.time(); "
    return host.run("python3 -c %s", prelude + code)


def test_hsts_is_sent(host):
    out = fetch(host, "r=u.urlopen('https://127.0.0.1/', context=c); print(r.headers['Strict-Transport-Security'])")
    assert out.stdout.strip().startswith("max-age=31536000")


def test_chunks_pass_through_as_they_come(host):
    # The upstream sends a chunk every 0.5 s; without proxy buffering the first arrives long before the last.
    out = fetch(
        host,
        "r=u.urlopen('https://127.0.0.1/', context=c); l=r.readline().decode().strip(); "
        "print(round(time.time()-t, 2), l)",
    )
    first_s, first_line = out.stdout.split(" ", 1)
    assert first_line.strip() == "data: chunk 0"
    assert float(first_s) < 0.9
