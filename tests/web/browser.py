"""The web client and the dashboard in a real browser (chromium, headless, through selenium).

Run by tests/web/browser.rs, which owns the daemon and a telnet user, bob. This script drives
the browser and asks the Rust side for what only it can do by printing one request a line on
stdout (`chatd> VERB ARGUMENT`); the answer comes back on stdin as `ok [JSON]`. Every wait is
bounded (at most 15 s); on failure the script saves a screenshot of what the browser showed
and exits non-zero with what it expected and what the page held.
"""

import argparse
import json
import os
import sys
import tempfile
import traceback
import unicodedata

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15
# The terminal's nick colours in order (src/session/terminal.rs NICK_COLOURS).
ANSI_NICK_COLOURS = ["31", "32", "34", "36", "91", "92", "94", "96"]
# alice registers from the page with this.
PAGE_PASSWORD = "tea at four, every day"


def log(*words):
    print("browser.py:", *words, file=sys.stderr, flush=True)


def ask(verb, argument=""):
    """One request to the Rust side; returns its JSON answer (None when it has none)."""
    print(f"chatd> {verb} {argument}".rstrip(), flush=True)
    answer = sys.stdin.readline()
    if not answer.startswith("ok"):
        raise AssertionError(f"the test's side did not answer {verb!r}: {answer!r}")
    rest = answer[2:].strip()
    return json.loads(rest) if rest else None


def nick_colour(nick):
    """The terminal's colour index of a nick: FNV-1a over its fold (NFC, full case fold, NFC)."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", nick).casefold())
    value = 0x811C9DC5
    for byte in folded.encode("utf-8"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value % len(ANSI_NICK_COLOURS)


class Page:
    def __init__(self, driver, shots):
        self.driver = driver
        self.shots = shots

    def wait(self, what, condition, timeout=WAIT):
        try:
            # The dashboard draws its tables anew on each poll: a condition that read an
            # element just replaced is asked again at the next round, not failed.
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.1,
                ignored_exceptions=[StaleElementReferenceException],
            ).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"not within {timeout} s: {what}\n{self.describe()}") from None

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def rows(self):
        """The chat page's lines: class, nick, nick's class, text."""
        return self.js(
            """
            return [...document.querySelectorAll('#log .line')].map((row) => {
              const nick = row.querySelector('.nick');
              return {
                cls: row.className,
                nick: nick ? nick.textContent : '',
                nickClass: nick ? nick.className : '',
                text: row.querySelector('.text').textContent,
                whole: row.textContent,
              };
            });
            """
        )

    def describe(self):
        try:
            if self.driver.find_elements(By.ID, "log"):
                return "the page's lines:\n" + "\n".join(
                    f"  [{row['cls']}] {row['whole']}" for row in self.rows()
                )
            return "the page's text:\n" + self.driver.find_element(By.TAG_NAME, "body").text
        except Exception as err:  # the description must never hide the real failure
            return f"(could not read the page: {err})"

    def row_with(self, text, cls=None):
        """Waits for a line whose text contains `text` (and whose class has `cls`)."""

        def found():
            for row in self.rows():
                if text in row["whole"] and (cls is None or cls in row["cls"].split()):
                    return row
            return None

        return self.wait(f"a line with {text!r}" + (f" of class {cls!r}" if cls else ""), found)

    def type(self, line):
        field = self.driver.find_element(By.ID, "input")
        field.send_keys(line)
        field.send_keys(Keys.ENTER)

    def phase(self):
        return self.js("return document.body.dataset.phase")


def chat_lines(page):
    """(nick, text) of every line said by someone, history included, in page order."""
    said = []
    for row in page.rows():
        classes = row["cls"].split()
        if any(kind in classes for kind in ("chat", "history", "private", "sent")):
            said.append((row["nick"], row["text"]))
    return said


def assert_no_duplicates(page, when):
    said = chat_lines(page)
    seen = set()
    for line in said:
        assert line not in seen, f"{line} shown twice {when}\n{page.describe()}"
        seen.add(line)


def start_browser(profile):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,700",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Notifications allowed, so that asking for them does not leave a prompt up.
    options.add_experimental_option(
        "prefs", {"profile.default_content_setting_values.notifications": 1}
    )
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def check_chat(page, args):
    driver = page.driver
    driver.get(args.url)
    page.wait("the nickname prompt", lambda: page.phase() == "nick")
    page.wait("the greeting", lambda: any("system" in r["cls"] for r in page.rows()))
    label = driver.find_element(By.ID, "input-label").text
    assert label == "Nickname", f"the field is labelled {label!r} at the nickname prompt"
    page.type("alice")
    page.wait("alice logged in", lambda: page.phase() == "chat")
    page.wait(
        "alice's room in the header",
        lambda: driver.find_element(By.ID, "room").text == "lobby",
    )
    page.wait(
        "bob and alice in the member list",
        lambda: {"alice", "bob"}
        <= {el.text.split()[0] for el in driver.find_elements(By.CSS_SELECTOR, "#members .nick")},
    )
    page.wait(
        "lobby in the room list",
        lambda: any(
            "lobby" in el.text for el in driver.find_elements(By.CSS_SELECTOR, "#rooms .room")
        ),
    )

    # The topic, in the header.
    page.type("/topic Release 0.9 on Friday; be nice")
    page.wait(
        "the topic in the header",
        lambda: driver.find_element(By.ID, "topic").text == "Release 0.9 on Friday; be nice",
    )

    # Both ways, as lines, as /me and as private lines.
    page.type("hello from the browser")
    ask("bob-expect", "<alice> hello from the browser")
    ask("bob-say", "hello from telnet")
    row = page.row_with("hello from telnet", "chat")
    assert row["nick"] == "bob", row
    ask("bob-say", "/me waves from telnet")
    row = page.row_with("waves from telnet", "action")
    assert row["whole"].endswith("* bob waves from telnet"), row
    page.type("/me waves back")
    ask("bob-expect", "alice waves back")
    page.type("/msg bob a private word")
    page.row_with("a private word", "sent")
    ask("bob-expect", "*alice* a private word")
    ask("bob-say", "/msg alice a private answer")
    row = page.row_with("a private answer", "private")
    assert row["nick"] == "bob", row

    # System lines: every `*** ` line has the class, and looks unlike a chat line.
    joined = page.row_with("alice has joined", "system")
    assert joined["whole"].split(" ", 1)[1].startswith("*** "), joined
    for row in page.rows():
        if row["text"].startswith("*** "):
            assert "system" in row["cls"].split(), f"a *** line without the class: {row}"
    colours = page.js(
        """
        const colour = (sel) => getComputedStyle(document.querySelector(sel)).color;
        return [colour('#log .line.system .text'), colour('#log .line.chat .text')];
        """
    )
    assert colours[0] != colours[1], f"system and chat lines look alike: {colours}"

    # The same nick colour as a colour terminal: bob turns colour on and sees alice's nick.
    ask("bob-say", "/color on")
    page.type("which colour am I")
    seen = ask("bob-expect", "which colour am I")
    code = next((c for c in ANSI_NICK_COLOURS if f"\x1b[{c}malice" in seen), None)
    assert code is not None, f"no nick colour in bob's line {seen!r}"
    terminal = ANSI_NICK_COLOURS.index(code)
    row = page.row_with("which colour am I", "chat")
    assert f"nick-{terminal}" in row["nickClass"].split(), (
        f"alice is colour {terminal} on the terminal, {row['nickClass']!r} on the page"
    )
    for nick in ["alice", "bob", "Straße", "ÅSA", "zoë", "Guest-1234"]:
        got = page.js("return chatdNickColour(arguments[0])", nick)
        assert got == nick_colour(nick), f"{nick}: the page says {got}, the terminal {nick_colour(nick)}"
    ask("bob-say", "/color off")

    # An account, registered from the page: the field turns into a password field while the
    # session asks for one, and back. (The reconnect below then logs in with the password.)
    page.type("/register")
    field = driver.find_element(By.ID, "input")
    page.wait("a password field", lambda: field.get_attribute("type") == "password")
    assert driver.find_element(By.ID, "input-label").text == "Password"
    page.type(PAGE_PASSWORD)
    page.row_with("Type it again", "system")
    page.wait("a password field again", lambda: field.get_attribute("type") == "password")
    page.type(PAGE_PASSWORD)
    page.row_with("alice is registered; you are logged in", "system")
    page.wait("a text field after the password", lambda: field.get_attribute("type") == "text")
    assert PAGE_PASSWORD not in page.describe(), "the password shows on the page"


def still_whole(page, before, event):
    """After `event`, alice's next line reaches bob, and the page shows every line it showed
    before, in order, and none twice."""
    line = f"browser after the {event}"
    page.type(line)
    ask("bob-expect", f"<alice> {line}")
    page.row_with(line, "chat")
    after = chat_lines(page)
    assert after[: len(before)] == before, f"lines changed across the {event}\n{page.describe()}"
    assert_no_duplicates(page, f"after the {event}")


def check_broker_restart(page):
    """The broker is killed -9: the socket stays, the session resumes with a new broker."""
    before = chat_lines(page)
    ask("kill-broker")
    page.row_with("The chat service restarted", "system")
    ask("bob-say", "said after the restart")
    page.row_with("said after the restart", "chat")
    still_whole(page, before, "restart")


def check_reconnect(page):
    """The socket drops (closed under the page): the page reconnects, logs in again, shows
    what it missed once and what it had not again."""
    before = chat_lines(page)
    page.js("state.socket.close()")
    page.wait("the page noticing", lambda: page.phase() == "connecting")
    ask("bob-say", "said while alice was away")
    page.row_with("reconnected", "system")
    page.wait("alice back in the chat", lambda: page.phase() == "chat")
    page.row_with("said while alice was away")
    still_whole(page, before, "reconnect")


def check_quiet_room(page):
    """The socket drops while alice is in a room where nothing was said yet, and bob says a
    line there: the page goes back to that room, not to the default one it logs in to, and
    shows that line as the room's history, and nothing of the default room's again."""
    driver = page.driver

    def count(text):
        return sum(text in row["whole"] for row in page.rows())

    page.type("/join quiet")
    page.row_with("alice has joined quiet", "system")
    reconnects, joins = count("reconnected"), count("alice has joined quiet")
    # The page stays away until told (its next try would be 1 s away, and is called off).
    page.js("state.socket.close()")
    page.wait("the page noticing", lambda: page.phase() == "connecting")
    page.js("clearTimeout(state.reconnectTimer)")
    ask("bob-say", "/join quiet")
    ask("bob-say", "said in quiet while alice was away")
    ask("bob-expect", "<bob> said in quiet while alice was away")
    page.js("connect()")
    page.wait("the page reconnected", lambda: count("reconnected") > reconnects)
    page.wait("alice back in quiet", lambda: count("alice has joined quiet") > joins)
    page.wait("alice back in the chat", lambda: page.phase() == "chat")
    assert driver.find_element(By.ID, "room").text == "quiet", "the page is not back in quiet"
    page.row_with("said in quiet while alice was away", "history")
    assert_no_duplicates(page, "back in quiet")
    # The next check goes on from here: back in the lobby, its history would show again.


def check_catch_up(page):
    """The socket is down while bob says 30 lines in the room `tea`, more than the 20 the room
    shows a newcomer: the page reconnects, goes back to `tea` from the default room, asks for
    what was said after the last line it showed, and shows all 30 once, in order, as chat
    lines (not as history), and nothing it had shown again."""
    driver = page.driver
    page.type("/join tea")
    page.wait("alice in tea", lambda: driver.find_element(By.ID, "room").text == "tea")
    ask("bob-say", "/join tea")
    page.row_with("bob has joined tea", "system")
    page.type("tea for two")
    ask("bob-expect", "<alice> tea for two")
    # Shown before the socket drops: the page asks for what was said after it.
    page.row_with("tea for two", "chat")
    before = chat_lines(page)
    # The page stays away until told: its next try would be 30 s away, and is called off.
    page.js("state.attempt = BACKOFF_SECONDS.length; state.socket.close()")
    page.wait("the page noticing", lambda: page.phase() == "connecting")
    page.js("clearTimeout(state.reconnectTimer)")
    missed = [f"missed line {n:02}" for n in range(1, 31)]
    for line in missed:
        ask("bob-say", line)
    ask("bob-expect", f"<bob> {missed[-1]}")
    page.js("connect()")
    page.row_with("reconnected", "system")
    page.row_with(missed[-1], "chat")
    page.wait("alice back in the chat", lambda: page.phase() == "chat")
    assert driver.find_element(By.ID, "room").text == "tea", "the page is not back in tea"
    shown = [text for nick, text in chat_lines(page) if text.startswith("missed line")]
    assert shown == missed, f"the missed lines as shown: {shown}\n{page.describe()}"
    for row in page.rows():
        if row["text"].startswith("missed line"):
            assert "chat" in row["cls"].split(), f"a missed line shown as {row['cls']!r}"
        assert "may be missing" not in row["text"], f"the page gave up: {row}"
    still_whole(page, before, "catch-up")
    page.type("/join lobby")
    page.wait("alice in the lobby", lambda: driver.find_element(By.ID, "room").text == "lobby")
    ask("bob-say", "/join lobby")
    page.row_with("bob has joined lobby", "system")


def admin_login(page, args, nick, password):
    driver = page.driver
    driver.get(args.url.rstrip("/") + "/admin")
    page.wait("the login form", lambda: driver.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "login-nick").send_keys(nick)
    field = driver.find_element(By.ID, "login-password")
    field.send_keys(password)
    field.send_keys(Keys.ENTER)


def check_admin(page, args, chat_tab):
    driver = page.driver
    # A registered account without the role: no dashboard.
    admin_login(page, args, args.user, args.user_password)
    page.wait("the refusal", lambda: driver.find_element(By.ID, "denied").is_displayed())
    text = driver.find_element(By.ID, "denied").text
    assert "This account is not an administrator" in text, text
    assert not driver.find_element(By.ID, "dashboard").is_displayed(), "a dashboard for carol"

    # A wrong password: the form says so and stays.
    admin_login(page, args, args.admin, "not the password")
    message = driver.find_element(By.ID, "login-message")
    page.wait(
        "the login refused",
        lambda: "error" in (message.get_attribute("class") or "") and message.text != "",
    )
    log("a wrong password on the dashboard:", message.text)
    assert not driver.find_element(By.ID, "dashboard").is_displayed(), "a dashboard without a password"

    admin_login(page, args, args.admin, args.admin_password)
    page.wait("the dashboard", lambda: driver.find_element(By.ID, "dashboard").is_displayed())
    page.wait(
        "bob in the who-list",
        lambda: any(
            cells and cells[0].text == "bob" and cells[2].text.startswith("127.0.0.1")
            for cells in (
                tr.find_elements(By.TAG_NAME, "td")
                for tr in driver.find_elements(By.CSS_SELECTOR, "#users tbody tr")
            )
        ),
    )
    page.wait(
        "lobby in the rooms table",
        lambda: "lobby" in driver.find_element(By.CSS_SELECTOR, "#rooms tbody").text,
    )
    page.wait(
        "both charts drawn",
        lambda: len(driver.find_elements(By.CSS_SELECTOR, ".chart polyline")) == 2,
    )
    figures = driver.find_element(By.ID, "figures").text
    for label in ("Connections", "Users", "Broker restarts", "Fan-out p50"):
        assert label in figures, f"no {label} in the figures: {figures}"

    # Some traffic, so that the charts show it: bob talks between the dashboard's polls.
    def points():
        # Read in the page: the chart is drawn anew on each answer (no stale element).
        return page.js(
            "const p = document.querySelector('#chart-lines polyline');"
            "return p ? p.getAttribute('points').split(' ').length : 0;"
        )

    bursts = [
        ["is the web client live yet?"],
        ["it is: port 8023", "works on my phone too"],
        ["the dashboard draws the traffic", "nice", "and kicks, apparently"],
    ]
    for burst in bursts:
        seen = points()
        for line in burst:
            ask("bob-say", line)
        page.wait("the next point on the chart", lambda: points() > seen)
    page.wait("the last burst charted", lambda: points() > seen + 1)
    top = driver.find_element(By.CSS_SELECTOR, "#chart-lines .now").text
    assert " max 0.00 " not in top, f"the chart saw no lines: {top!r}"
    driver.set_window_size(1200, 1000)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(os.path.join(args.screenshots, "admin.png"))

    # Mute bob from the form: the mutes list shows him.
    def outcome_says(words):
        outcome = driver.find_element(By.ID, "outcome")
        return words in outcome.text and "failed" not in (outcome.get_attribute("class") or "")

    def listed_mutes():
        # Read in the page: the list is drawn anew on each poll.
        return page.js("return [...document.querySelectorAll('#mutes .mute-nick')].map((n) => n.textContent);")

    driver.find_element(By.ID, "mute-nick").send_keys("bob")
    driver.find_element(By.CSS_SELECTOR, "#mute-form button[type=submit]").click()
    page.wait("the mute carried out", lambda: outcome_says("muted bob"))
    page.wait("bob in the mutes list", lambda: listed_mutes() == ["bob"])

    driver.find_element(By.ID, "kick-nick").send_keys("bob")
    driver.find_element(By.ID, "kick-reason").send_keys("from the dashboard")
    driver.find_element(By.CSS_SELECTOR, "#kick-form button[type=submit]").click()
    page.wait(
        "the kick carried out",
        lambda: "bob" in driver.find_element(By.ID, "outcome").text
        and "failed" not in driver.find_element(By.ID, "outcome").get_attribute("class"),
    )
    ask("bob-closed")
    page.wait(
        "bob gone from the who-list",
        lambda: "bob" not in [
            tr.find_elements(By.TAG_NAME, "td")[0].text
            for tr in driver.find_elements(By.CSS_SELECTOR, "#users tbody tr")
            if tr.find_elements(By.TAG_NAME, "td")
        ],
    )

    # A mute outlives its user's connection: two polls after bob left, it is still listed.
    def updated():
        return driver.find_element(By.ID, "meta").text.rsplit(" · updated ", 1)[-1]

    stamps = {updated()}

    def two_more_polls():
        stamps.add(updated())
        return len(stamps) >= 3

    page.wait("two more polls", two_more_polls)
    assert listed_mutes() == ["bob"], f"the mutes list after bob left: {listed_mutes()}"
    log("the mutes list with bob gone:", driver.find_element(By.ID, "mutes").text)
    # Lifted from the list.
    driver.find_element(By.CSS_SELECTOR, "#mutes button").click()
    page.wait("the unmute carried out", lambda: outcome_says("unmuted bob"))
    page.wait(
        "the mutes list empty",
        lambda: listed_mutes() == [] and "nobody is muted" in driver.find_element(By.ID, "mutes").text,
    )

    # The room saw it.
    driver.switch_to.window(chat_tab)
    page.row_with("*** bob was removed by an operator (from the dashboard)", "system")
    page.wait(
        "bob gone from the member list",
        lambda: "bob" not in [el.text for el in driver.find_elements(By.CSS_SELECTOR, "#members .nick")],
    )
    # The room list's count of the user's room follows its members (oper came, bob went).
    page.wait(
        "the lobby's count in the room list equal to its members",
        lambda: page.js(
            "const count = document.querySelector('#rooms [aria-current] .count');"
            "return count && count.textContent === String(document.querySelectorAll('#members .nick').length);"
        ),
    )


def check_console(driver):
    """No page error, no refused inline script or style (the server's CSP would log it)."""
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and ("Content Security Policy" in entry["message"] or "Uncaught" in entry["message"])
    ]
    assert not problems, "the browser console has errors:\n" + "\n".join(problems)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--user-password", required=True)
    parser.add_argument("--screenshots", required=True)
    args = parser.parse_args()
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(program):
            log(f"{program} is missing: apt-get install chromium chromium-driver")
            return 1
    with tempfile.TemporaryDirectory(prefix="chatd-chromium-") as profile:
        driver = start_browser(profile)
        page = Page(driver, args.screenshots)
        try:
            check_chat(page, args)
            check_broker_restart(page)
            check_reconnect(page)
            check_quiet_room(page)
            check_catch_up(page)
            check_console(driver)
            chat_tab = driver.current_window_handle
            driver.switch_to.new_window("tab")
            check_admin(page, args, chat_tab)
            check_console(driver)
            driver.set_window_size(1100, 700)
            driver.find_element(By.ID, "input").click()
            driver.save_screenshot(os.path.join(args.screenshots, "chat.png"))
            # A phone.
            driver.set_window_size(390, 760)
            driver.save_screenshot(os.path.join(args.screenshots, "chat-narrow.png"))
        except BaseException:
            log(traceback.format_exc())
            try:
                for entry in driver.get_log("browser"):
                    log("console:", entry["level"], entry["message"])
            except Exception:
                pass
            try:
                driver.save_screenshot(os.path.join(args.screenshots, "failure.png"))
                log("what the browser showed:", os.path.join(args.screenshots, "failure.png"))
            except Exception:
                pass
            return 1
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
