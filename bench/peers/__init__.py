"""Helpers of bench/compare: the peers (nginx, Dovecot as a proxy), process
accounting and the SVG chart. Standard library only."""
