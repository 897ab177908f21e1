"""The operator console in a real Chromium against the dev stack (real Kafka and Redis), as an
operator uses it. Each test arranges what it needs through the real admin API or the edge,
does the journey in the browser, asserts on what the page shows and on what the services then
hold, runs axe-core on the pages it visited, and saves screenshots (light and dark, 1280 px).
"""

import json
import re

from conftest import ADMIN, ADMIN_KEY, CONSUMER, DATA_KEY, EDGE, PUBLIC


def put_source(http, name, config, version=None):
    headers = {"If-Match": str(version)} if version is not None else None
    status, _, body = http.admin("PUT", f"/v1/sources/{name}", config, headers=headers)
    assert status == 200, f"PUT /v1/sources/{name}: {status} {body}"
    return body["version"]


# --- Serving -------------------------------------------------------------------------------


def test_console_is_served_on_the_admin_listener_only_with_strict_headers(http):
    for path in ["/console", "/console/assets/app.js", "/console/assets/console.css"]:
        status, headers, _ = http.request("GET", ADMIN + path, key=None)
        h = {k.lower(): v for k, v in headers.items()}
        assert status == 200, path
        csp = h["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'", csp
        assert directives["script-src"] == "'self'", csp  # no 'unsafe-inline', no 'unsafe-eval'
        assert directives["style-src"] == "'self'", csp
        assert directives["frame-ancestors"] == "'none'", csp
        assert directives["object-src"] == "'none'", csp
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert "set-cookie" not in h
    status, headers, _ = http.request("GET", ADMIN + "/console/assets/app.js", key=None)
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/javascript")
    # Never on the public listener, never through the edge.
    for base in (PUBLIC, EDGE):
        status, _, _ = http.request("GET", base + "/console", key=None)
        assert status == 404, f"{base}/console answered {status}"


def test_the_console_cannot_be_framed_and_sets_no_cookie(console):
    page = console.page
    page.goto(f"{CONSUMER}/healthz")  # another origin
    page.set_content(f'<iframe id="f" title="framed console" src="{ADMIN}/console"></iframe>')
    page.wait_for_timeout(1500)
    frame = page.frame_locator("#f")
    assert frame.locator("text=Sign in").count() == 0, "the console rendered inside a frame"
    console.problems.clear()  # Chromium reports the refused frame as an error: that is the point
    console.login()
    assert console.page.context.cookies() == []
    stored = console.page.evaluate("() => Object.keys(localStorage).filter(k => localStorage.getItem(k).includes('dev-admin-key'))")
    assert stored == [], "the key leaked into localStorage"


# --- Health at a glance ---------------------------------------------------------------------


def test_health_shows_every_service_ready_each_stages_lag_and_what_flowed(console, http, unique):
    # Events through the edge: the chart and the latency come from the services' own metrics
    # (sampled into Redis every 15 s), the lag from the stages' groups in Kafka.
    for i in range(20):
        status, _, body = http.ingest({"id": f"{unique}-{i}", "source": "jira", "payload": {"title": "health"}})
        assert status == 202, body
    page = console.login().page
    services = page.locator(".services .service")
    services.first.wait_for()
    texts = [t.strip() for t in services.all_inner_texts()]
    assert [t.split("\n")[0] for t in texts] == ["gateway", "pre-transformer", "post-transformer", "consumer-api"], texts
    # At least one ready instance of each (an instance of an earlier run that was killed, not
    # stopped, is listed silent for 15 minutes: that is what the page is for).
    ready = [re.search(r"(\d+) of (\d+) ready", t) for t in texts]
    assert all(m and int(m.group(1)) >= 1 for m in ready), texts
    lag = page.locator("#health-lag tbody tr")
    assert [r.split("\t")[0] for r in lag.all_inner_texts()] == ["pre", "post"]
    assert page.locator("#health-instances tbody tr").count() >= 4
    # Within two samples and a refresh the latency is known and the charts have lines.
    page.wait_for_function("() => !document.querySelector('#health-latency').textContent.includes('p50 —')", timeout=60000)
    assert page.locator("svg.chart path.line").count() >= 2
    latency = page.locator("#health-latency").inner_text()
    assert "p99" in latency and " ms" in latency, latency
    console.shot("health")
    # The numbers behind the charts, for those who do not see them.
    page.get_by_text("The charts' numbers").click()
    assert page.locator("#health-series tbody tr").count() >= 30
    console.axe("health")
    # The sources list shows each source's rate from the same samples.
    console.go("/sources")
    page.locator("#sources-table").wait_for()
    assert "Events/s (5 min)" in page.locator("#sources-table thead").inner_text()
    # A key that may only read sees the glance, and no more.
    status, _, created = http.admin("POST", "/v1/keys", {"name": unique, "scopes": ["read:jira"]})
    assert status == 201, created
    page.get_by_role("button", name="Forget key").click()
    console.login(created["key"])
    page.locator(".services .service").first.wait_for()
    assert page.locator(".problem").count() == 0


# --- What a key may see: meta: and read: --------------------------------------------------------


def test_a_meta_key_sees_metadata_and_no_payload_and_a_read_key_sees_dead_letters_masked(console, http, unique):
    config = {"pre": [
        {"op": "mask_field", "params": {"fields": ["payload.reporter.email"]}},
        {"op": "cast", "params": {"fields": {"payload.n": "int"}}},
    ], "post": []}
    status, _, body = http.admin("PUT", f"/v1/sources/{unique}", config)
    assert status == 200, body
    # The gateway and the stages pick the new source up within a second.
    http.eventually("the source accepted", lambda: http.ingest({"id": "fine", "source": unique, "payload": {"n": "1", "reporter": {"email": "ann@example.com"}}})[0] == 202)
    status, _, body = http.ingest({"id": "poison", "source": unique, "payload": {"n": "x", "reporter": {"email": "ann@example.com"}}})
    assert status == 202, body
    status, _, meta = http.admin("POST", "/v1/keys", {"name": f"{unique}-meta", "scopes": [f"meta:{unique}", "consume:console-*"]})
    assert status == 201, meta
    status, _, reader = http.admin("POST", "/v1/keys", {"name": f"{unique}-read", "scopes": [f"read:{unique}"]})
    assert status == 201, reader
    http.eventually("the dead letter", lambda: http.admin("GET", f"/v1/dead-letters?source={unique}")[2]["count"] == 1)

    # read: the dead letter's message, with what the source masks masked.
    page = console.login(reader["key"]).page
    console.go(f"/dead-letters?source={unique}")
    page.get_by_text("Original message (masked)").click()
    message = page.locator("#dead-letters pre.json").inner_text()
    assert '"email": "****"' in message and "ann@example.com" not in message, message

    # meta: no message, no payload in the tail or the entity, the metadata all the same.
    page.get_by_role("button", name="Forget key").click()
    console.login(meta["key"])
    console.go(f"/dead-letters?source={unique}")
    row = page.locator("#dead-letters tbody tr").first
    row.wait_for()
    assert "Hidden" in row.inner_text() and "operation_failed" in row.inner_text(), row.inner_text()
    console.axe("dead letters, meta key")
    console.go("/tail")
    page.get_by_label("Source").fill(unique)
    page.get_by_label("From").select_option("earliest")
    page.get_by_role("button", name="Start").click()
    tail_row = page.locator('tr[data-event-id="fine"]')
    tail_row.wait_for(timeout=30_000)
    tail_row.get_by_role("button", name="Open event fine").click()
    page.locator("#tail-detail").get_by_text("Payload hidden").wait_for()
    assert "ann@example.com" not in page.locator("#tail-detail").inner_text()
    console.go(f"/entities?source={unique}&id=fine")
    page.locator("#entity-history").wait_for()
    result = page.locator("#entity-result").inner_text()
    assert "Payload hidden" in result and "ann@example.com" not in result, result
    assert page.locator("#entity-history tbody tr").count() == 1


def test_entity_history_header_search_and_saved_filters(console, http, unique):
    status, _, made = http.admin("POST", "/v1/keys", {"name": unique, "scopes": ["admin", "read:*", "consume:console-*"]})
    assert status == 201, made
    entity = f"{unique}-entity"
    for step in range(2):
        status, _, body = http.ingest({"id": entity, "source": "jira", "payload": {"step": step}})
        assert status == 202, body
        http.eventually("the version published", lambda: http.request("GET", f"{CONSUMER}/metadata/jira/{entity}", key=DATA_KEY)[2].get("payload", {}).get("step") == step)
    page = console.login(made["key"]).page
    console.go(f"/entities?source=jira&id={entity}")
    history = page.locator("#entity-history tbody tr")
    history.first.wait_for()
    assert history.count() == 2, page.locator("#entity-history").inner_text()
    history.first.get_by_role("button", name="Open version 1").click()
    page.get_by_role("heading", name=re.compile("^Version published at")).wait_for()
    assert "metastream-source" in page.locator("table.headers").inner_text()
    console.axe("entity with history")
    console.shot("entity")

    # The tail searched by a Kafka header, and the search saved and picked again.
    console.go("/tail")
    page.get_by_label("Header").fill(f"metastream-event-id={unique}-b")
    page.get_by_label("From").select_option("earliest")
    page.get_by_label("Save the fields above as").fill(f"{unique} b only")
    page.get_by_role("button", name="Save filter").click()
    page.get_by_role("button", name="Start").click()
    page.locator("#tail-status", has_text="Live").wait_for()
    for suffix in ("a", "b"):
        status, _, body = http.ingest({"id": f"{unique}-{suffix}", "source": "jira", "payload": {}})
        assert status == 202, body
    page.locator(f'tr[data-event-id="{unique}-b"]').wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.locator(f'tr[data-event-id="{unique}-a"]').count() == 0, "the header search let another event through"
    console.go("/sources")
    console.go("/tail")
    assert page.get_by_label("Header").input_value() == ""
    page.get_by_label("Saved filters").select_option(f"{unique} b only")
    assert page.get_by_label("Header").input_value() == f"metastream-event-id={unique}-b"


def test_create_a_subscription_see_its_secret_once_and_export_the_list(console, http, unique):
    page = console.login().page
    console.go("/subscriptions")
    page.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    page.get_by_label("Description").fill(unique)
    page.get_by_role("button", name="Create subscription").click()
    secret = page.locator("#secret-once")
    secret.wait_for()
    assert secret.input_value().startswith("whsec_")
    subs = http.admin("GET", "/v1/subscriptions")[2]["subscriptions"]
    mine = [s for s in subs if s.get("description") == unique]
    assert len(mine) == 1, subs
    try:
        page.locator(f'tr[data-subscription="{mine[0]["id"]}"]').wait_for()
        with page.expect_download() as got:
            page.get_by_role("button", name="Export JSON of subscriptions").click()
        exported = json.loads(open(got.value.path(), encoding="utf-8").read())
        assert any(s["id"] == mine[0]["id"] and "secret" not in s for s in exported), exported
    finally:
        http.admin("DELETE", f"/v1/subscriptions/{mine[0]['id']}")


# --- Sources -------------------------------------------------------------------------------


def test_edit_a_source_see_errors_at_their_place_preview_save_and_conflict(console, http, unique):
    put_source(http, unique, {"pre": [{"op": "add_timestamp"}], "post": [{"op": "add_processing_info"}]})
    page = console.login().page
    console.go("/sources")
    page.get_by_role("link", name=unique, exact=True).click()
    page.get_by_text("stored version 1").wait_for()
    console.axe("the source editor")

    # A mistake: a path outside payload/metadata and an unknown operation.
    editor = page.get_by_label("Operations (JSON: pre, post, on_error, kind, native)")
    mistaken = '{\n  "pre": [\n    {"op": "add_timestamp", "params": {"target": "nowhere"}},\n    {"op": "no_such_op"}\n  ],\n  "post": []\n}'
    editor.fill(mistaken)
    page.get_by_role("button", name="Save as version 2").click()
    errors = page.locator("#config-errors li")
    errors.first.wait_for()
    assert errors.count() == 2
    target = page.locator('#config-errors li[data-location="pre[0].params.target"]')
    assert "line 3" in target.inner_text() and "must start with" in target.inner_text()
    assert "line 4" in page.locator('#config-errors li[data-location="pre[1].op"]').inner_text()
    assert editor.get_attribute("aria-invalid") == "true"
    target.get_by_role("button", name="Show it in the editor").click()
    selected = page.evaluate("() => { const t = document.getElementById('config'); return t.value.slice(t.selectionStart, t.selectionEnd); }")
    assert selected == '"target": "nowhere"', selected
    assert page.evaluate("() => document.activeElement.id") == "config"
    console.axe("the source editor with validation errors")
    console.shot("source-errors")
    status, _, stored = http.admin("GET", f"/v1/sources/{unique}")
    assert stored["version"] == 1, "a refused config was stored"

    # Fixed: mask the email (operation from the catalog's example, adapted), then preview.
    fixed = {"pre": [{"op": "add_timestamp"}, {"op": "mask_field", "params": {"fields": ["payload.email"]}}], "post": [{"op": "add_processing_info"}]}
    import json as _json

    editor.fill(_json.dumps(fixed, indent=2))
    page.get_by_label("Event", exact=True).fill(_json.dumps({"id": "u1", "source": unique, "payload": {"email": "a@example.com", "title": "t"}}))
    page.get_by_role("button", name="Preview the edit").click()
    view = page.locator("#preview-view")
    view.wait_for()
    assert "Outcome: kept" in view.inner_text()
    mask_step = page.locator('[data-step="pre[1]"]')
    assert "mask_field" in mask_step.inner_text() and "changed: payload.email" in mask_step.inner_text()
    assert '"****"' in page.locator("#preview-view section", has_text="Result").inner_text()
    console.axe("the preview")
    console.shot("source-preview")

    page.get_by_role("button", name="Save as version 2").click()
    page.get_by_text("Saved: version 2").wait_for()
    status, _, stored = http.admin("GET", f"/v1/sources/{unique}")
    assert stored["version"] == 2 and stored["pre"][1]["op"] == "mask_field"

    # Saved means applied: an event through the edge comes out masked.
    status, _, body = http.ingest({"id": "u1", "source": unique, "payload": {"email": "a@example.com", "title": "t"}})
    assert status == 202, body
    record = http.eventually(
        "the record processed with the new operation",
        lambda: (lambda r: r[2] if r[0] == 200 else None)(http.request("GET", f"{CONSUMER}/metadata/{unique}/u1", key=DATA_KEY)),
    )
    assert record["payload"]["email"] == "****", record

    # Another operator saves meanwhile: this edit is refused (412) and shown, not overwritten.
    theirs = {"pre": [{"op": "add_timestamp", "params": {"format": "epoch_ms"}}], "post": []}
    assert put_source(http, unique, theirs, version=2) == 3
    editor.fill(_json.dumps({"pre": [], "post": []}))
    page.get_by_role("button", name="Save as version 3").click()
    conflict = page.locator("#conflict")
    conflict.wait_for()
    assert "412" in conflict.inner_text() and "version 3" in conflict.inner_text()
    page.get_by_role("heading", name="Stored version 3").wait_for()
    status, _, stored = http.admin("GET", f"/v1/sources/{unique}")
    assert stored["version"] == 3 and stored["pre"] == theirs["pre"], "the conflicting edit overwrote the other operator's"
    console.axe("the conflict")
    console.shot("source-conflict")
    page.get_by_role("button", name="Discard my edit, load version 3").click()
    page.get_by_text("stored version 3").wait_for()
    assert "epoch_ms" in editor.input_value()


def test_the_catalog_is_the_apis(console, http):
    status, _, catalog = http.admin("GET", "/v1/operations")
    page = console.login().page
    console.go("/sources/jira")
    page.get_by_label("Operation", exact=True).select_option("mask_field")
    mask = next(o for o in catalog["operations"] if o["name"] == "mask_field")
    detail = page.locator("#catalog-detail")
    detail.get_by_text(mask["summary"]).wait_for()
    for p in mask["params"]:
        assert p["description"] in detail.inner_text(), p["name"]


# --- Dead letters --------------------------------------------------------------------------


def test_a_poison_event_is_dead_lettered_then_replayed_after_the_fix(console, http, unique):
    put_source(http, unique, {"pre": [{"op": "validate", "params": {"required": ["payload.title"]}}], "post": []})
    status, _, body = http.ingest({"id": "poison-1", "source": unique, "payload": {"no_title": True}})
    assert status == 202, body
    http.eventually(
        "the dead letter on the admin API",
        lambda: http.admin("GET", f"/v1/dead-letters?source={unique}")[2]["count"] >= 1,
    )
    page = console.login().page
    console.go(f"/dead-letters?source={unique}")
    row = page.locator("#dead-letters tbody tr", has_text="poison-1")
    row.wait_for()
    text = row.inner_text()
    assert "operation_failed" in text and "pre" in text and "`payload.title` is required" in text
    row.get_by_text("Original message").click()
    assert '"no_title": true' in row.locator("pre").inner_text()
    console.axe("dead letters")
    console.shot("dead-letters")

    # The fix, then replay the selection from the console.
    put_source(http, unique, {"pre": [], "post": []})
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Replay selected (1)").click()
    result = page.locator('#replay-results li[data-result="replayed"]')
    result.wait_for()
    assert "pre_process_meta_data_events" in result.inner_text()
    record = http.eventually(
        "the replayed event delivered and stored",
        lambda: (lambda r: r[2] if r[0] == 200 else None)(http.request("GET", f"{CONSUMER}/metadata/{unique}/poison-1", key=DATA_KEY)),
    )
    assert record["payload"] == {"no_title": True}

    # Once only, unless forced: the API's answer is shown per item.
    row.get_by_role("button", name="Replay").click()
    skipped = page.locator('#replay-results li[data-result="skipped"]')
    skipped.wait_for()
    assert "already replayed" in skipped.inner_text()

    # All matching the filter (confirmed in a dialog).
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Replay all matching the filter").click()
    page.locator("#dl-results .note").wait_for()
    assert re.search(r"Replayed \d+, skipped \d+", page.locator("#dl-results").inner_text())
    console.shot("dead-letters-replayed")


# --- Keys ----------------------------------------------------------------------------------


def test_create_a_key_see_it_once_use_it_rotate_and_revoke(console, http, unique):
    put_source(http, unique, {"pre": [], "post": []})
    page = console.login().page
    console.go("/keys")
    page.get_by_label("Name", exact=True).fill(unique)
    page.get_by_label("Scopes", exact=True).fill(f"ingest:{unique}")
    page.get_by_label("Requests/s").fill("50")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-once")
    secret.wait_for()
    key = secret.input_value()
    assert key.startswith("msk_")
    row = page.locator("#keys tbody tr", has_text=unique)
    row.wait_for()
    assert f"ingest:{unique}" in row.inner_text() and "50 req/s" in row.inner_text()
    console.axe("keys with a new key's secret")
    console.shot("keys-created")

    # It works for its source through the edge, and only there.
    event = {"id": "k1", "source": unique, "payload": {}}
    http.eventually("the new key accepted", lambda: http.ingest(event, key=key)[0] == 202, timeout=10)
    assert http.ingest({"id": "k1", "source": "jira", "payload": {}}, key=key)[0] == 403

    # Shown once: gone after leaving the page.
    console.go("/sources")
    console.go("/keys")
    page.locator("#keys tbody tr", has_text=unique).wait_for()
    assert key not in page.content()

    # Rotate: a new key shown once, the old one refused.
    page.once("dialog", lambda d: d.accept())
    page.locator("#keys tbody tr", has_text=unique).get_by_role("button", name=re.compile("^Rotate")).click()
    page.locator("#secret-once").wait_for()
    rotated = page.locator("#secret-once").input_value()
    assert rotated.startswith("msk_") and rotated != key
    http.eventually("the old key refused", lambda: http.ingest(event, key=key)[0] == 401, timeout=10)
    http.eventually("the rotated key accepted", lambda: http.ingest(event, key=rotated)[0] == 202, timeout=10)

    # Revoke.
    page.once("dialog", lambda d: d.accept())
    page.locator("#keys tbody tr", has_text=unique).get_by_role("button", name=re.compile("^Revoke")).click()
    page.get_by_text(re.compile(f"Revoked {unique}")).wait_for()
    http.eventually("the revoked key refused", lambda: http.ingest(event, key=rotated)[0] == 401, timeout=10)
    page.locator("#keys tbody tr", has_text=unique).wait_for(state="detached")


# --- A key without the admin scope ----------------------------------------------------------


def test_a_read_only_key_sees_its_sources_and_can_change_nothing(console, http, unique):
    status, _, made = http.admin("POST", "/v1/keys", {"name": unique, "scopes": ["read:jira"]})
    assert status == 201, made
    key = made["key"]
    try:
        page = console.login(key).page
        page.get_by_text("Read-only.").wait_for()
        assert page.locator("#who").inner_text() == "Key: read-only"
        # It sees the sources its `read:` scope covers, and only those.
        console.go("/sources")
        page.locator("#sources-table").wait_for()
        shown = page.locator("#sources-table tbody tr td:first-child").all_inner_texts()
        assert shown == ["jira"], shown
        assert page.get_by_role("button", name="Open editor").is_disabled()
        console.axe("sources, read-only")
        console.shot("read-only")

        # The editor shows jira; saving is disabled, previewing (it changes nothing) is not.
        console.go("/sources/jira")
        page.locator("#source-meta", has_text="stored version").wait_for()
        assert page.locator("#save").is_disabled()
        assert page.locator("#preview").is_enabled()
        # A source its scope does not cover: the API's 403 names the scope it would need.
        console.go("/sources/github")
        refusal = page.locator(".problem", has_text="HTTP 403")
        refusal.wait_for()
        assert "read:github" in refusal.inner_text()
        # Keys reveal other principals: admin only.
        console.go("/keys")
        page.locator(".problem", has_text="HTTP 403").first.wait_for()
        assert page.get_by_role("button", name="Create key").is_disabled()
        # Dead letters: only jira's, and nothing to replay.
        console.go("/dead-letters")
        page.locator("#dead-letters").wait_for()
        sources = page.locator("#dead-letters tbody tr[data-dead-letter] td:nth-child(2)").all_inner_texts()
        assert all(s == "jira" for s in sources), sources
        assert page.get_by_role("button", name="Replay all matching the filter").is_disabled()
        assert all(b.is_disabled() for b in page.locator("#dead-letters button", has_text="Replay").all())

        # And were a button forced, the API refuses: nothing works that it would refuse.
        forced = page.evaluate(
            """async () => {
                const auth = {'Authorization': 'Bearer ' + sessionStorage.getItem('metastream.console.key'), 'Content-Type': 'application/json'};
                const put = await fetch('/v1/sources/jira', {method: 'PUT', headers: auth, body: '{"pre": [], "post": []}'});
                const replay = await fetch('/v1/dead-letters/replay', {method: 'POST', headers: auth, body: '{"source": "jira"}'});
                return [put.status, (await put.json()).required_scope, replay.status];
            }"""
        )
        assert forced == [403, "admin", 403], forced
        status, _, jira = http.admin("GET", "/v1/sources/jira")
        assert jira["pre"], "the read-only key changed jira"
    finally:
        http.admin("DELETE", f"/v1/keys/{made['id']}")


def test_a_refused_key_is_told_why(console):
    page = console.open().page
    page.get_by_label("API key").fill("msk_not_a_real_key")
    page.get_by_role("button", name="Open the console").click()
    problem = page.locator(".problem")
    problem.wait_for()
    assert "HTTP 401" in problem.inner_text()
    console.axe("sign-in with an error")
    console.shot("sign-in-refused")


# --- Live tail and entities (the consumer-api, another origin) -----------------------------


def test_the_live_tail_shows_events_as_published_pauses_without_loss_and_opens_each(console, http, unique):
    # The consumer-api's scopes: a console group and reading; admin for the console itself.
    status, _, made = http.admin("POST", "/v1/keys", {"name": unique, "scopes": ["admin", "read:*", "consume:console-*"]})
    assert status == 201, made
    try:
        # The gateway tells the console where the consumer-api is, and lets it connect only there.
        status, headers, config = http.request("GET", ADMIN + "/console/config.json", key=None)
        assert status == 200 and config["consumer_api_url"] == CONSUMER, config
        csp = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
        assert f"connect-src 'self' {CONSUMER};" in csp, csp
        # The consumer-api answers CORS for the console's origin only.
        for origin, expected in [(ADMIN, 204), ("http://evil.example", 403)]:
            status, headers, body = http.request("OPTIONS", CONSUMER + "/stream", key=None, headers={"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
            h = {k.lower(): v for k, v in headers.items()}
            assert status == expected, (origin, status, body)
            assert (h.get("access-control-allow-origin") == origin) == (expected == 204), h

        page = console.login(made["key"]).page
        console.go("/tail")
        page.get_by_label("Source").fill("jira")
        page.get_by_role("button", name="Start").click()
        page.locator("#tail-status", has_text="Live").wait_for()
        page.wait_for_timeout(1000)  # the group takes its place at the end on its first poll
        first = f"{unique}-1"
        status, _, body = http.ingest({"id": first, "source": "jira", "payload": {"title": "tail me"}})
        assert status == 202, body
        http.ingest({"id": f"{unique}-other", "source": "github", "payload": {}})
        row = page.locator(f'tr[data-event-id="{first}"]')
        row.wait_for(timeout=30_000)
        assert page.locator(f'tr[data-event-id="{unique}-other"]').count() == 0, "the source filter let github through"

        # Opened: the record, its provenance and trace id.
        row.get_by_role("button", name=f"Open event {first}").click()
        detail = page.locator("#tail-detail")
        detail.get_by_text("tail me").wait_for()
        provenance = detail.locator("table.provenance").inner_text()
        assert "Ingest partition / offset" in provenance and "Trace id" in provenance, provenance
        assert re.search(r"Post config version\s+\d+", provenance), provenance
        console.axe("live tail")
        console.shot("live-tail")

        # Paused: nothing arrives; resumed: what was published meanwhile, once.
        page.get_by_role("button", name="Pause").click()
        page.locator("#tail-status", has_text="Paused").wait_for()
        second = f"{unique}-2"
        status, _, _ = http.ingest({"id": second, "source": "jira", "payload": {"title": "while paused"}})
        assert status == 202
        page.wait_for_timeout(1500)
        assert page.locator(f'tr[data-event-id="{second}"]').count() == 0, "an event arrived while paused"
        page.get_by_role("button", name="Resume").click()
        page.locator(f'tr[data-event-id="{second}"]').wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator(f'tr[data-event-id="{first}"]').count() == 1, "an event came twice"

        # A filter the API does not take: its 400, as it said it.
        page.get_by_label("Filter", exact=True).fill('{"nope": 1}')
        page.get_by_role("button", name="Restart").click()
        page.locator("#tail-problem .problem", has_text="HTTP 400").wait_for()

        # The entity lookup finds the same record.
        console.go(f"/entities?source=jira&id={first}")
        result = page.locator("#entity-result")
        result.get_by_text("tail me").wait_for()
        assert "Ingest partition / offset" in result.inner_text()
        console.axe("entity lookup")
        console.shot("entity")
        page.get_by_label("Event id").fill(f"{unique}-missing")
        page.get_by_role("button", name="Look up").click()
        result.get_by_text("HTTP 404").wait_for()
    finally:
        http.admin("DELETE", f"/v1/keys/{made['id']}")


def test_the_consumer_apis_scopes_hold_in_the_console(console, http, unique):
    # An admin key without consume:/read: scopes: the consumer-api's 403, as it said it.
    page = console.login().page
    console.go("/entities?source=jira&id=anything")
    refusal = page.locator("#entity-result .problem", has_text="HTTP 403")
    refusal.wait_for()
    assert "read:jira" in refusal.inner_text()
    console.go("/tail")
    page.get_by_role("button", name="Start").click()
    page.locator("#tail-problem .problem", has_text="HTTP 403").wait_for()


# --- Subscriptions and audit ----------------------------------------------------------------


def test_subscriptions_pause_resume_rotate_and_the_audit_trail(console, http, unique):
    status, _, sub = http.admin("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/hook", "description": unique})
    assert status == 201, sub
    try:
        page = console.login().page
        console.go("/subscriptions")
        row = page.locator(f'tr[data-subscription="{sub["id"]}"]')
        row.wait_for()
        assert "active" in row.inner_text() and "127.0.0.1:9/hook" in row.inner_text()
        console.axe("subscriptions")
        console.shot("subscriptions")

        row.get_by_role("button", name=f"Pause {sub['id']}").click()
        page.locator(f'tr[data-subscription="{sub["id"]}"] .badge.disabled').wait_for()
        assert http.admin("GET", f"/v1/subscriptions/{sub['id']}")[2]["state"] == "disabled"
        page.locator(f'tr[data-subscription="{sub["id"]}"]').get_by_role("button", name=f"Resume {sub['id']}").click()
        page.locator(f'tr[data-subscription="{sub["id"]}"] .badge.active').wait_for()
        assert http.admin("GET", f"/v1/subscriptions/{sub['id']}")[2]["state"] == "active"

        page.once("dialog", lambda d: d.accept())
        page.locator(f'tr[data-subscription="{sub["id"]}"]').get_by_role("button", name=re.compile("^Rotate secret")).click()
        secret = page.locator("#secret-once")
        secret.wait_for()
        assert secret.input_value().startswith("whsec_")
        assert http.admin("GET", f"/v1/subscriptions/{sub['id']}")[2]["secret_generation"] == sub["secret_generation"] + 1

        page.locator(f'tr[data-subscription="{sub["id"]}"]').get_by_role("button", name=f"Show dead letters of {sub['id']}").click()
        page.locator(f'tr[data-subscription="{sub["id"]}"]').get_by_text(re.compile(r"\d+ dead letters?")).wait_for()

        # The audit trail shows what this test did, newest first.
        put_source(http, unique, {"pre": [], "post": []})
        console.go("/audit")
        page.get_by_label("Filter (action, actor or target contains)").fill(unique)
        page.locator("#audit tbody tr", has_text="source.put").first.wait_for()
        first = page.locator("#audit tbody tr").first
        assert "source.put" in first.inner_text() and unique in first.inner_text()
        console.axe("the audit trail")
        console.shot("audit")
    finally:
        http.admin("DELETE", f"/v1/subscriptions/{sub['id']}")


# --- Export -------------------------------------------------------------------------------


def download(page, button):
    """Clicks `button` and answers (file name, text) of the download it starts."""
    with page.expect_download() as started:
        button.click()
    d = started.value
    with open(d.path(), encoding="utf-8") as f:
        return d.suggested_filename, f.read()


def test_export_what_a_table_shows_as_json_and_csv(console, http, unique):
    import csv
    import io
    import json

    status, _, made = http.admin("POST", "/v1/keys", {"name": f"{unique}, \"quoted\"", "scopes": ["read:jira"]})
    assert status == 201, made
    try:
        page = console.login().page
        console.go("/keys")
        page.locator("#keys").wait_for()
        name, text = download(page, page.get_by_role("button", name="Export JSON of keys"))
        assert name.startswith("metastream-keys-") and name.endswith(".json"), name
        keys = json.loads(text)
        mine = [k for k in keys if k["id"] == made["id"]]
        assert mine and mine[0]["scopes"] == ["read:jira"], mine
        assert made["key"] not in text, "an export holds a key's secret"
        name, text = download(page, page.get_by_role("button", name="Export CSV of keys"))
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(keys)
        assert any(r["id"] == made["id"] and r["name"] == f'{unique}, "quoted"' for r in rows), rows[:3]
        page.get_by_text(f"Exported {len(keys)} row").wait_for()

        # The audit trail: what the filter matches.
        console.go("/audit")
        page.get_by_label("Filter (action, actor or target contains)").fill(made["id"])
        page.locator("#audit tbody tr", has_text="key.create").first.wait_for()
        _, text = download(page, page.get_by_role("button", name="Export JSON of audit trail"))
        records = json.loads(text)
        assert records and all(made["id"] in json.dumps(r) for r in records), records
        assert any(r["action"] == "key.create" for r in records), records

        # Dead letters: the CSV has the table's columns, one row per dead letter shown.
        console.go("/dead-letters")
        page.locator("#dead-letters").wait_for()
        shown = page.locator("#dead-letters tbody tr[data-dead-letter]").count()
        _, text = download(page, page.get_by_role("button", name="Export CSV of dead letters"))
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == shown, (len(rows), shown)
        assert text.splitlines()[0].startswith("partition,offset,source,event_id,stage,reason")
        console.axe("dead letters with export")
    finally:
        http.admin("DELETE", f"/v1/keys/{made['id']}")


# --- Theme and keyboard ---------------------------------------------------------------------


def test_theme_toggle_and_keyboard_use(console):
    page = console.open().page
    # Keyboard only: the sign-in page starts in the key field; type, Enter.
    page.get_by_label("API key").wait_for()
    assert page.evaluate("() => document.activeElement.name") == "key"
    page.keyboard.type(ADMIN_KEY)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Health", exact=True).wait_for()
    # Tab order from the top of the page: the skip link (visibly focused), the navigation in
    # its visual order, the theme and sign-out buttons, then the page's own controls.
    page.locator(".skip").focus()
    names = ["Skip to content"]
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    for _ in range(10):
        page.keyboard.press("Tab")
        names.append(page.evaluate("() => document.activeElement.textContent.trim() || document.activeElement.name"))
    assert names == ["Skip to content", "Health", "Sources", "Live tail", "Entities", "Dead letters", "Subscriptions", "Keys", "Audit trail", "Theme: auto", "Forget key"], names
    # The skip link moves focus to the content and leaves the page where it is.
    page.locator(".skip").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.evaluate("() => location.hash") == "#/health"
    # Keyboard navigation: Enter on a focused link opens the page.
    page.get_by_role("link", name="Keys").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="API keys").wait_for()
    console.go("/sources")
    page.get_by_role("heading", name="Sources", exact=True).wait_for()
    # The theme: auto (the system's) → light → dark, and the page follows.
    theme = page.locator("#theme")
    assert theme.inner_text() == "Theme: auto"
    theme.click()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
    theme.click()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 19, 24)", bg
    console.axe("sources in the dark theme")
    page.reload()
    page.get_by_role("heading", name="Sources", exact=True).wait_for()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark", "the choice did not persist"
    theme.click()
    assert page.evaluate("() => document.documentElement.dataset.theme") is None
