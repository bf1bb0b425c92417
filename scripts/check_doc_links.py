#!/usr/bin/env python3
"""Checks the relative links of Markdown pages: every linked file exists and every #anchor names a
heading of the linked page (GitHub's slugs). Usage: check_doc_links.py FILE.md... ; exit 1 on a
broken link, listing each."""
import os
import re
import sys

LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def strip_code(text):
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return re.sub(r'`[^`\n]*`', '', text)


def slugs(path):
    """GitHub's heading anchors of a Markdown file."""
    seen, result = {}, set()
    text = re.sub(r'^```.*?^```', '', open(path, encoding='utf-8').read(), flags=re.S | re.M)
    for line in text.splitlines():
        m = re.match(r'^(#{1,6})\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        slug = re.sub(r'[^\w\- ]', '', m.group(2).strip().lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f'{slug}-{n}')
    return result


def main(files):
    broken = []
    for page in files:
        text = strip_code(open(page, encoding='utf-8').read())
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r'^[a-z]+:', target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(resolved):
                broken.append(f'{page}: {target}: no file {resolved}')
            elif anchor and resolved.endswith('.md') and anchor not in slugs(resolved):
                broken.append(f'{page}: {target}: no heading #{anchor} in {resolved}')
    for b in broken:
        print(b)
    print(f'{len(files)} pages, {len(broken)} broken links')
    return 1 if broken else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
