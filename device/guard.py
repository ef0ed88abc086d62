# Who may ask what: the captive portal's redirects and the cross-site checks, run before the routes.
# Handed what they need (the board's name and address, the page's token); they import nothing of the app.
import server

# Where phones check that they are online (Android, Apple, Windows, Firefox): answered with the page.
# Word lists in one bytes object each: a tuple of short bytes would cost a heap object per entry.
# (A phone asks by name, and any name that is not the board's is redirected anyway: this list is for
# the paths asked at the board's own address.)
CHECKS = b" /generate_204 /hotspot-detect.html /connecttest.txt /ncsi.txt "
LOCAL = b" .local .lan .home .localdomain .fritz.box "  # the board's name as a router's DNS may add to it
CROSS_SITE = "cross-site request refused"


def _listed(words, w):
    # Whether w is one of the space-separated words.
    i = words.find(w)
    return i > 0 and words[i - 1] == 32 and words[i + len(w)] == 32


def portal(req, hostname, wifi):
    # A phone that joins the access point asks a well-known address whether it is online, by a name the
    # board's DNS answered with its own address: a redirect to the page (not the answer it expects) makes
    # the phone open the page in its sign-in sheet. A change sent to a name that is not the board's is
    # refused. The Host must be an IP address or the board's name: a DNS-rebinding name is not the board.
    # No browser leaves out Host, so a request without one cannot be a rebinding attack.
    name = req.headers[b"host"].split(b":")[0]
    known = not name or name.replace(b".", b"").isdigit() or name.startswith(hostname) and (
        len(name) == len(hostname) or _listed(LOCAL, name[len(hostname):]))
    if not known or _listed(CHECKS, req.path):
        if req.method != b"GET":
            raise server.HttpError(server.FORBIDDEN, "unknown Host: use the board's address")
        raise server.HttpError(b"302 Found", "", b"Location: http://%s/\r\n" % wifi.status()[2])


def same_site(req, token=None, form=None):
    # Refuses what another website could make a phone's browser send (403, nothing changes). An Origin,
    # when sent, must be this Host. A change (token given) needs proof it comes from the board's own
    # page: the X-Espblink header (another site's script cannot send it without the board's consent) or
    # the form's per-boot token.
    origin = req.headers[b"origin"]
    if origin and origin.split(b"//")[-1] != req.headers[b"host"]:
        raise server.HttpError(server.FORBIDDEN, CROSS_SITE)
    if token is not None and req.headers[b"x-espblink"] != b"1" and (form is None or form.get(b"t") != token):
        raise server.HttpError(server.FORBIDDEN, CROSS_SITE)
