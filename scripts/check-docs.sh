#!/usr/bin/env bash
# Builds the book (docs/) and checks it; CI runs it. Exits non-zero on:
#   - a build warning or error from mdBook (warnings are errors here);
#   - a page in SUMMARY.md whose file is missing (book.toml has create-missing = false), or a
#     Markdown file in docs/src that SUMMARY.md does not reach;
#   - a broken internal link or anchor in the built HTML: every href/src to a local page must
#     exist, and every #fragment must be an id on that page. External links are not fetched.
# Installs the pinned mdBook from the crate registry when it is missing (cargo install, without
# the serve/watch features the check does not need).
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.4.52
mdbook=${MDBOOK:-mdbook}
if ! "$mdbook" --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
  echo "== installing mdbook $MDBOOK_VERSION (cargo install, no serve/watch features)"
  t0=$SECONDS
  cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features --features search --quiet
  echo "   installed in $((SECONDS - t0)) s"
  mdbook="${CARGO_HOME:-$HOME/.cargo}/bin/mdbook"
fi

echo "== mdbook build docs ($("$mdbook" --version))"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rm -rf docs/book
if ! RUST_LOG=warn "$mdbook" build docs 2>&1 | tee "$log"; then
  echo "FAILED: mdbook build" >&2
  exit 1
fi
if grep -E '\[(WARN|ERROR)\]|WARN |ERROR ' "$log" >/dev/null; then
  echo "FAILED: mdbook printed warnings (treated as errors):" >&2
  grep -E '\[(WARN|ERROR)\]|WARN |ERROR ' "$log" >&2
  exit 1
fi

echo "== SUMMARY.md reachability and internal links"
python3 - docs <<'PY'
import html.parser, os, re, sys, urllib.parse

docs = sys.argv[1]
src, book = os.path.join(docs, "src"), os.path.join(docs, "book")
errors = []

# Every Markdown file in src is reached from SUMMARY.md, and every SUMMARY entry exists.
summary = open(os.path.join(src, "SUMMARY.md"), encoding="utf-8").read()
listed = set()
for target in re.findall(r"\]\(([^)\s]+)\)", summary):
    path = os.path.normpath(urllib.parse.unquote(target.split("#")[0]))
    listed.add(path)
    if not os.path.isfile(os.path.join(src, path)):
        errors.append(f"SUMMARY.md lists {target}, which does not exist")
for root, _, files in os.walk(src):
    for f in files:
        if f.endswith(".md") and f != "SUMMARY.md":
            rel = os.path.normpath(os.path.relpath(os.path.join(root, f), src))
            if rel not in listed:
                errors.append(f"docs/src/{rel} is not reachable from SUMMARY.md")

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k):
                self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) is not None:
                self.links.append((k, a[k], self.getpos()[0]))

pages = {}
for root, _, files in os.walk(book):
    for f in files:
        # 404.html is served from any path, so mdBook gives it absolute links under site-url.
        if f.endswith(".html") and not (root == book and f == "404.html"):
            p = os.path.normpath(os.path.join(root, f))
            parser = Page()
            parser.feed(open(p, encoding="utf-8").read())
            pages[p] = parser
if not pages:
    errors.append("docs/book holds no HTML pages")

checked = 0
for page, parsed in sorted(pages.items()):
    for attr, link, line in parsed.links:
        if link.startswith("/"):
            errors.append(f"{os.path.relpath(page, book)}:{line}: absolute link {link!r}")
            continue
        u = urllib.parse.urlsplit(link)
        if u.scheme or link.startswith("//") or link.startswith("javascript:"):
            continue  # external: not fetched
        path = urllib.parse.unquote(u.path)
        target = page if path == "" else os.path.normpath(os.path.join(os.path.dirname(page), path))
        if os.path.isdir(target):
            target = os.path.join(target, "index.html")
        where = f"{os.path.relpath(page, book)}:{line}"
        checked += 1
        if not os.path.exists(target):
            errors.append(f"{where}: {attr}={link!r}: no such file in the built book")
            continue
        frag = urllib.parse.unquote(u.fragment)
        if frag and target.endswith(".html"):
            ids = pages[target].ids if target in pages else set()
            if frag not in ids:
                errors.append(f"{where}: {attr}={link!r}: no id {frag!r} on {os.path.relpath(target, book)}")

print(f"   {len(pages)} pages, {checked} internal links and assets checked, {len(listed)} SUMMARY entries")
if errors:
    print("FAILED:", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
PY
echo "== book OK: docs/book/index.html"
