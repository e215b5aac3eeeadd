"""`maskgan serve`: a real Ray Serve deployment of conftest's tiny generator, asked over real HTTP and
through its page in a real headless Chromium (Debian's `chromium` + `chromium-driver`).

Expected fills are checked against the request (the words kept, each blank filled with one word of
the vocabulary) and seeded ones against `maskgan infill --seed`, i.e. the library run in this process.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.config import ServeConfig, config_from_dict, load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.infill import Infiller
from maskgan_rl.resources import serving_demands, shortfalls

pytestmark = pytest.mark.slow

MASKGAN = str(Path(sys.executable).with_name("maskgan"))
STARTUP_TIMEOUT_S = 300  # Ray, Serve's controller and proxy, then the replicas, on a busy 2-core machine
STOP_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 120
MAX_SAMPLES = 8


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    """(status, JSON answer) of a POST to url + "infill"."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "infill", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        return response.status, response.read()


def assert_filled(text: str, sample: dict, vocab: list[str]) -> None:
    """`sample` keeps the words of `text` and fills each of its blanks with one vocabulary word."""
    typed = text.split()
    blanks = [i for i, word in enumerate(typed) if word == "___"]
    assert sample["words"] == sample["text"].split(" ")
    assert len(sample["words"]) == len(typed)
    assert sample["filled"] == blanks
    for i, (word, was) in enumerate(zip(sample["words"], typed)):
        assert word in vocab if i in blanks else word == was, (text, sample)


@pytest.fixture(scope="module")
def vocab(tiny_checkpoint) -> list[str]:
    return load_checkpoint(tiny_checkpoint)["vocab"]


# ------------------------------------------------------------------ without a server


def test_serve_settings_are_validated():
    for override, allowed in [("serve.replicas=0", "an integer >= 1"), ("serve.port=70000", "a TCP port in [1, 65535]"),
                              ("serve.batch_wait_ms=-1", ">= 0"), ("serve.replica_resources={gpu_node: -1}", "a mapping of custom resource names to amounts >= 0")]:
        with pytest.raises(ConfigError) as raised:
            load_config("synthetic", [override])
        key = override.split("=")[0]
        assert str(raised.value).startswith(f"{key}=") and f"is out of range: must be {allowed}" in str(raised.value)


def test_replicas_that_the_cluster_cannot_host_are_named():
    two_cpus = [{"CPU": 2.0}]
    assert shortfalls(serving_demands(ServeConfig(replicas=2)), two_cpus) == []
    (problem,) = shortfalls(serving_demands(ServeConfig(replicas=3)), two_cpus)
    assert "3 serve replica(s) x 1 = 3 CPU but the cluster has 2" in problem and "serve.replicas" in problem
    (problem,) = shortfalls(serving_demands(ServeConfig(num_gpus_per_replica=1)), two_cpus)
    assert "serve.num_gpus_per_replica=1" in problem and "has none" in problem


def test_bad_checkpoint_settings_or_port_fail_before_serve_starts(tmp_path, tiny_checkpoint, free_port):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    port = free_port()
    cases = [
        ([str(tmp_path / "missing.pt")], "does not exist"),
        ([str(corrupt)], "cannot be read"),
        ([str(tiny_checkpoint), "model.hidden=16"], "takes serve.* and resources.* settings"),
        ([str(tiny_checkpoint), "--replicas", "0"], "serve.replicas=0 is out of range"),
        ([str(tiny_checkpoint), "--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        for argv, words in cases:
            done = subprocess.run([MASKGAN, "serve", *argv], capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line: no Ray, no traceback
            assert done.stderr.startswith("maskgan serve: error: ") and words in done.stderr, done.stderr


# ------------------------------------------------------------------ batching, in this process


def test_seeded_answers_do_not_depend_on_their_batch(ray_session, tiny_checkpoint, free_port):
    """A batch runs only when it is full (max_batch_size=4, and a wait longer than the HTTP timeout), so
    each group of 4 concurrent requests below is sampled together: the seeded request gets what it
    gets alone (computed here with the library), whatever the other three are."""
    from ray import serve

    from maskgan_rl.serving import start_server

    stored = load_checkpoint(tiny_checkpoint)["config"]
    cfg = config_from_dict(stored, [f"serve.port={free_port()}", "serve.max_batch_size=4", "serve.batch_wait_ms=600000"])
    text = "the ___ ___ sharply"
    seeded = {"texts": [text], "temperature": 0.8, "samples": 3, "seed": 11}
    alone = Infiller.from_checkpoint(tiny_checkpoint).fill([text], temperature=0.8, samples=3, seed=11)
    batches = [
        [seeded, {"texts": [text, "___ trading"], "temperature": 0.8, "samples": 3},
         {"texts": [text], "temperature": 0.8, "samples": 3, "seed": 12}, {"texts": ["___ rose"]}],
        [{"texts": [text], "temperature": 0.8, "samples": 3}, seeded, seeded, {"texts": ["___ ___ rose"], "seed": 11}],
    ]
    try:
        url = start_server(Infiller.from_checkpoint(tiny_checkpoint), str(tiny_checkpoint), cfg)
        for batch in batches:
            with ThreadPoolExecutor(len(batch)) as pool:
                answers = list(pool.map(lambda body: post(url, body), batch))
            assert [status for status, _ in answers] == [200] * len(batch)
            for body, (_, answer) in zip(batch, answers):
                if body is seeded:
                    assert [[sample["text"] for sample in versions] for versions in answer["fills"]] == alone
    finally:
        serve.shutdown()


# ------------------------------------------------------------------ `maskgan serve` in a subprocess


def start_serve(argv: list[str], log_path: Path) -> subprocess.Popen:
    """`maskgan serve ARGV`, logging to log_path, in a session of its own: should it not stop, the Ray
    processes it started go with it."""
    with open(log_path, "w") as log:
        return subprocess.Popen([MASKGAN, "serve", *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_serve(process: subprocess.Popen) -> None:
    """SIGKILL to its whole session: it and the Ray processes it started."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def stop_serve(process: subprocess.Popen, log_path: Path) -> None:
    """SIGTERM, which must stop it as Ctrl-C does: a clean exit that says so."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_serve(process)
        pytest.fail(f"maskgan serve did not stop on SIGTERM:\n{log_path.read_text()[-3000:]}")
    assert process.returncode == 0, log_path.read_text()[-3000:]
    assert "[serve] stopping" in log_path.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, free_port, wait_until_healthy):
    """`maskgan serve` with 2 replicas on a free port; yields its URL, then stops it with SIGTERM."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    process = start_serve([str(tiny_checkpoint), "--port", str(port), "--replicas", "2", "--batch-wait-ms", "20",
                           "serve.num_cpus_per_replica=0.5", f"serve.max_samples={MAX_SAMPLES}", "resources.num_cpus=2"], log_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_healthy(process, lambda: _healthy(url), log_path, "maskgan serve", STARTUP_TIMEOUT_S)
        yield url
    finally:
        stop_serve(process, log_path)


def test_a_sigterm_as_soon_as_it_answers_stops_it_cleanly(tmp_path, tiny_checkpoint, free_port, wait_until_healthy):
    """The app answers before `serve.run` returns; a SIGTERM then must not meet Ray's handler, which aborts."""
    log_path, port = tmp_path / "serve.log", free_port()
    process = start_serve([str(tiny_checkpoint), "--port", str(port), "resources.num_cpus=2"], log_path)
    try:
        wait_until_healthy(process, lambda: _healthy(f"http://127.0.0.1:{port}/"), log_path, "maskgan serve", STARTUP_TIMEOUT_S)
    except BaseException:
        kill_serve(process)
        raise
    stop_serve(process, log_path)


def _healthy(url: str) -> bool:
    try:
        return get(url + "healthz")[0] == 200
    except OSError:
        return False


def test_health_names_the_checkpoint_and_its_model(server, tiny_checkpoint, vocab):
    status, body = get(server + "healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["checkpoint"] == str(tiny_checkpoint)
    assert (health["vocab_size"], health["seq_len"], health["max_samples"]) == (len(vocab), 6, MAX_SAMPLES)


def test_one_request_fills_exactly_the_blanks_with_vocabulary_words(server, vocab):
    texts = ["the ___ rose", "___ ___ trading .", "stock ___ Nasdaq"]
    status, answer = post(server, {"texts": texts, "temperature": 1.5, "samples": 3})
    assert status == 200
    assert [len(versions) for versions in answer["fills"]] == [3, 3, 3]
    for text, versions in zip(texts, answer["fills"]):
        for sample in versions:
            assert_filled(text, sample, vocab)
    assert answer["unknown_words"] == ["Nasdaq"]


def test_a_seeded_request_gets_what_maskgan_infill_prints(server, tiny_checkpoint, capsys):
    texts = ["the ___ ___ sharply", "___ trading"]
    status, answer = post(server, {"texts": texts, "temperature": 0.7, "samples": 2, "seed": 5})
    assert status == 200
    assert main(["infill", str(tiny_checkpoint), *texts, "--temperature", "0.7", "--samples", "2", "--seed", "5"]) == 0
    printed = [group.splitlines() for group in capsys.readouterr().out.strip().split("\n\n")]
    assert [[sample["text"] for sample in versions] for versions in answer["fills"]] == printed


def test_32_concurrent_requests_are_each_answered_correctly(server, vocab):
    words = [w for w in vocab if not w.startswith("<")]
    # 32 different texts (two words around a blank, then one to three more blanks), 1-3 samples each,
    # every fourth seeded: each answer must be its own request's.
    requests = []
    for i in range(32):
        text = " ".join([words[i % 8], "___", words[i // 8], *["___"] * (1 + i % 3)])
        body = {"texts": [text], "samples": 1 + i % 3, "temperature": 0.5 + (i % 2)}
        if i % 4 == 0:
            body["seed"] = i
        requests.append(body)
    assert len({body["texts"][0] for body in requests}) == 32
    seeded_alone = {i: post(server, body)[1] for i, body in enumerate(requests) if "seed" in body}

    start = threading.Barrier(32)

    def send(body: dict) -> tuple[int, dict]:
        start.wait(timeout=HTTP_TIMEOUT_S)
        return post(server, body)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, requests))
    for i, (body, (status, answer)) in enumerate(zip(requests, answers)):
        assert status == 200, answer
        (versions,) = answer["fills"]
        assert len(versions) == body["samples"]
        for sample in versions:
            assert_filled(body["texts"][0], sample, vocab)
        if i in seeded_alone:
            assert answer == seeded_alone[i]


def test_bad_requests_get_4xx_and_the_messages_of_maskgan_infill(server, tiny_checkpoint, capsys):
    def cli_message(*argv: str) -> str:
        assert main(["infill", str(tiny_checkpoint), *argv]) == 2
        return capsys.readouterr().err.strip().removeprefix("maskgan infill: error: ")

    shared = [
        ({"texts": ["the stock rose"]}, ["the stock rose"]),
        ({"texts": ["the ___ rose sharply in early trading"]}, ["the ___ rose sharply in early trading"]),
        ({"texts": ["the ___"], "temperature": 0}, ["the ___", "--temperature", "0"]),
        ({"texts": ["the ___"], "temperature": -1.5}, ["the ___", "--temperature", "-1.5"]),
        ({"texts": ["the ___"], "samples": 0}, ["the ___", "--samples", "0"]),
        ({"texts": ["the ___"], "seed": -1}, ["the ___", "--seed", "-1"]),
    ]
    for body, argv in shared:
        expected = cli_message(*argv)
        assert post(server, body) == (422, {"detail": expected})
    # JSON has no NaN, but Python's parser takes the literal: the CLI's "finite" check answers it.
    assert post(server, b'{"texts": ["the ___"], "temperature": NaN}') == (422, {"detail": cli_message("the ___", "--temperature", "nan")})

    server_only = [
        (b'{"texts": ["the ___"', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b'["the ___"]', 422, "must be a JSON object"),
        ({"texts": ["the ___"], "temprature": 1}, 422, "unknown field 'temprature'"),
        ({"texts": "the ___"}, 422, '"texts" must be a non-empty list of strings'),
        ({"texts": []}, 422, '"texts" must be a non-empty list of strings'),
        ({"texts": ["the ___", 3]}, 422, '"texts" must be a non-empty list of strings'),
        ({"texts": ["the ___"], "temperature": "hot"}, 422, '"temperature" must be a number'),
        ({"texts": ["the ___"], "samples": 2.5}, 422, '"samples" must be an integer'),
        ({"texts": ["the ___"], "samples": True}, 422, '"samples" must be an integer'),
        ({"texts": ["the ___"], "seed": "7"}, 422, '"seed" must be null'),
        ({"texts": ["the ___"], "samples": MAX_SAMPLES + 1}, 422, f"more than serve.max_samples={MAX_SAMPLES}"),
        ({"texts": ["the ___"] * 65}, 422, "more than serve.max_texts=64"),
    ]
    for body, status, words in server_only:
        got_status, answer = post(server, body)
        assert got_status == status and words in answer["detail"] and "\n" not in answer["detail"], (body, answer)
    assert post(server, {"texts": ["the ___"]})[0] == 200  # and the server still answers


# ------------------------------------------------------------------ the page, in headless Chromium


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (launch/setup.sh installs them when run as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,760"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(HTTP_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_fills_a_text_with_highlighted_samples(server, browser, tiny_checkpoint, vocab, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, HTTP_TIMEOUT_S)
    browser.get(server)
    box = browser.find_element(By.ID, "text")
    wait.until(lambda _: box.get_attribute("value"))  # the model's example, once healthz answered
    box.clear()
    box.send_keys("the ___ rose ___")
    slider = browser.find_element(By.ID, "temperature")
    slider.send_keys(Keys.HOME, *[Keys.ARROW_RIGHT] * 6)  # 0.1 + 6 steps of 0.1
    assert browser.find_element(By.ID, "temperature-value").text == "0.7"
    for field, value in (("samples", "4"), ("seed", "9")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "fill").click()

    items = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results li") or False)
    shown = [item.text for item in items]
    marked = [[mark.text for mark in item.find_elements(By.CSS_SELECTOR, "mark.filled")] for item in items]
    # What the page shows is what the library gives for the settings typed in (so they reached the server).
    expected = Infiller.from_checkpoint(tiny_checkpoint).fill(["the ___ rose ___"], temperature=0.7, samples=4, seed=9)[0]
    assert shown == expected
    assert marked == [[text.split()[1], text.split()[3]] for text in expected]
    assert all(word in vocab for words in marked for word in words)
    screenshot = tmp_path / "serve-page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    box.clear()
    box.send_keys("no blank here")
    browser.find_element(By.ID, "fill").click()
    error = browser.find_element(By.ID, "error")
    wait.until(lambda _: error.is_displayed())
    assert error.text.startswith("no blank in 'no blank here'")
    assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []
