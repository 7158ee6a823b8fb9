"""
The C{tcpsc} command (the console script, and C{python -m tcpsc}): tools
for trying and measuring tcpsc servers, beside the library.

It uses the library only through what the library exports: C{tcpsc} and its
public modules (C{tcpsc.tap}), never a private module, so that it shows what
a program of one's own can do with tcpsc.  L{tcpsc._cli.main} parses the
command line; each subcommand is a module of this package.
"""
