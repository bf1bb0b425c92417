#!/usr/bin/env python3
"""Checks that docs/architecture.md's module table is the include graph of the sources.

The table between the markers <!-- module-graph:begin --> and <!-- module-graph:end --> lists, for
each module, the modules it includes. For every module folder (include/tessera/<m>/, src/<m>/, and
kernels/ as part of the module `kernels`) this script collects the modules its files include
("tessera/<x>/..." and the private "<x>/..." headers of src/ and kernels/) and fails unless that
set is exactly the table's row: an include the table does not allow breaks the layering, and a
row naming a module that nothing includes is a stale document. It also fails when the table's
graph has a cycle. Standard-library Python only.

Usage: check_module_graph.py ROOT   (exit 1 listing each difference)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"(?:tessera/)?([a-z_]+)/', re.M)
ROW = re.compile(r'^\|\s*`([a-z_]+)`\s*\|.*\|([^|]*)\|\s*$')  # first and last cells
SOURCE_SUFFIXES = ('.h', '.hpp', '.cpp', '.cu', '.cuh')
# Private folders of src/ and kernels/ that belong to a module of another name.
KERNEL_FOLDERS = {'cpu', 'cuda'}


def read_table(architecture):
    text = open(architecture, encoding='utf-8').read()
    m = re.search(r'<!-- module-graph:begin -->(.*?)<!-- module-graph:end -->', text, re.S)
    if not m:
        sys.exit(f'{architecture}: no <!-- module-graph:begin --> ... <!-- module-graph:end --> table')
    table = {}
    for line in m.group(1).splitlines():
        row = ROW.match(line.strip())
        if row:
            table[row.group(1)] = set(re.findall(r'`([a-z_]+)`', row.group(2)))
    if not table:
        sys.exit(f'{architecture}: the module-graph table has no rows')
    return table


def module_files(root, module):
    folders = [os.path.join(root, 'include', 'tessera', module), os.path.join(root, 'src', module)]
    if module == 'kernels':  # the kernels themselves, beside the tile plan they read
        folders.append(os.path.join(root, 'kernels'))
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.join(directory, name)


def included_modules(path, module, modules):
    found = {}
    for name in INCLUDE.findall(open(path, encoding='utf-8', errors='replace').read()):
        if name in KERNEL_FOLDERS:
            name = 'kernels'
        if name in modules and name != module:
            found.setdefault(name, path)
    return found


def cycle(table):
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(table.get(node, ())):
            if state.get(nxt) == 'open':
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 'done'
        return None

    for node in sorted(table):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    table = read_table(os.path.join(root, 'docs', 'architecture.md'))
    modules = set(table)
    problems = []
    on_disk = {m for m in os.listdir(os.path.join(root, 'src'))
               if os.path.isdir(os.path.join(root, 'src', m))}
    on_disk |= {m for m in os.listdir(os.path.join(root, 'include', 'tessera'))
                if os.path.isdir(os.path.join(root, 'include', 'tessera', m))}
    if os.path.isdir(os.path.join(root, 'kernels')):
        on_disk.add('kernels')
    for missing in sorted(on_disk - modules):
        problems.append(f'module folder `{missing}` has no row in the table')
    for stale in sorted(modules - on_disk):
        problems.append(f'the table lists `{stale}`, which has no folder')
    loop = cycle(table)
    if loop:
        problems.append('the table has a cycle: ' + ' -> '.join(loop))
    for module in sorted(modules & on_disk):
        actual = {}
        for path in module_files(root, module):
            for name, where in included_modules(path, module, modules).items():
                actual.setdefault(name, os.path.relpath(where, root))
        for extra in sorted(set(actual) - table[module]):
            problems.append(f'`{module}` includes `{extra}` ({actual[extra]}), which the table does '
                            f'not allow')
        for unused in sorted(table[module] - set(actual)):
            problems.append(f'the table says `{module}` includes `{unused}`, but no file does')
    if problems:
        print('docs/architecture.md module graph does not match the sources:')
        for p in problems:
            print('  ' + p)
        return 1
    print(f'module graph: {len(modules)} modules, includes match docs/architecture.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
