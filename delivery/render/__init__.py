"""Rendering: blocks, bundles in volumes and envelopes, e-mail digests, sandboxed templates.

Import the modules directly (``delivery.render.merge``, ``delivery.render.email`` …): render
processes import only what their job needs.
"""
