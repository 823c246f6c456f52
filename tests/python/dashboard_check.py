"""Drives the built-in dashboard in a real headless Chromium (Debian's
package) with Playwright, as a person would, and prints what it saw as JSON.

Usage: dashboard_check.py URL KEY FROM TO SCREENSHOT

URL is the dashboard page; FROM and TO (UTC, YYYY-MM-DDTHH:MM) set the time
range; SCREENSHOT is where the full-page picture goes.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

url, key, start, end, screenshot = sys.argv[1:6]
chromium = os.environ.get("BULKHEAD_CHROMIUM", "/usr/bin/chromium")
seen = {}

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}?from={start}&to={end}")
    page.wait_for_selector("body[data-ready=true]")

    # a wrong key is refused, and nothing is shown
    page.fill("#key", "bhk_0123456789abcdef_" + "0" * 64)
    page.click("#signin-form button")
    # a selector wait, not wait_for_function: when the answer is not there at
    # once, Playwright polls a string predicate with eval, which the page's
    # Content-Security-Policy (rightly) forbids
    page.wait_for_selector("#signin-error:not(:empty)", state="attached")
    seen["wrong_key"] = page.text_content("#signin-error")
    seen["panels_hidden_after_wrong_key"] = page.is_hidden("#panels")

    page.fill("#key", key)
    page.click("#signin-form button")
    panels = ["p-volume", "p-error-ratio", "p-latency", "p-top-errors", "p-anomalies"]
    for panel in panels:
        page.wait_for_selector(f"#{panel}:not([data-state=loading]):not([data-state=idle])")
    seen["states"] = {p_: page.get_attribute(f"#{p_}", "data-state") for p_ in panels}
    seen["rows"] = {p_: page.get_attribute(f"#{p_}", "data-rows") for p_ in panels}
    seen["volume_legend"] = page.text_content("#p-volume .legend")
    seen["volume_lines"] = page.locator("#p-volume polyline").count()
    seen["error_ratio"] = page.text_content("#p-error-ratio .body")
    seen["latency"] = page.text_content("#p-latency .body")
    seen["top_errors"] = page.text_content("#p-top-errors .body")

    # the SQL console, and its CSV download
    page.fill("#sql", "SELECT body FROM logs WHERE severity_number >= 17 ORDER BY body")
    page.click("#run")
    page.wait_for_selector("#p-console[data-state=ready]")
    seen["console_rows"] = page.get_attribute("#p-console", "data-rows")
    seen["console_text"] = page.text_content("#p-console .body")
    with page.expect_download() as download:
        page.click("#csv")
    with open(download.value.path(), encoding="utf-8") as f:
        seen["csv"] = f.read()
    # a query the sandbox refuses shows its error in the console
    page.fill("#sql", "CREATE TABLE t AS SELECT 1")
    page.click("#run")
    page.wait_for_selector("#p-console[data-state=error]")
    seen["console_refusal"] = page.text_content("#p-console .body")

    # back to a useful picture for the screenshot
    page.fill("#sql", "SELECT service_name, count(*) AS records FROM logs GROUP BY service_name ORDER BY records DESC")
    page.click("#run")
    page.wait_for_selector("#p-console[data-state=ready]")
    page.screenshot(path=screenshot, full_page=True)
    seen["page_text"] = page.text_content("body")
    seen["script_errors"] = errors
    browser.close()

print(json.dumps(seen))
