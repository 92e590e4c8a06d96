#!/usr/bin/python3
# Turns a varlink interface file into a C header with the text as a string
# constant, so the file stays the one source both for the build and for
# GetInterfaceDescription.  Usage: embed-idl.py INPUT OUTPUT SYMBOL
import sys

src, dst, symbol = sys.argv[1:4]
with open(src, encoding='utf-8') as f:
    text = f.read()
lines = ['/* Generated from %s by embed-idl.py; do not edit. */' % src.split('/')[-1],
         '#pragma once', '', 'static const char %s[] =' % symbol]
for line in text.splitlines(keepends=True):
    esc = line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    lines.append('        "%s"' % esc)
lines[-1] += ';'
with open(dst, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
