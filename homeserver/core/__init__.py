"""The pure event core: identifiers, room versions, events, signing,
power levels, authorization rules and state resolution.

Nothing in this package does I/O or imports Twisted or storage; callers
fetch what is needed and pass it in (``tests/core/test_purity.py`` checks).
"""
