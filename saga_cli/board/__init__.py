"""The saga board: one page that shows every saga across the three services, as it happens.

`saga board` serves it on loopback. It is a client like the rest of the CLI: it follows the
topics (the ground truth, as `saga trace` reads them) and asks order_svc's API for the order
deadline; the services know nothing of it.

  command.py   the `saga board` command: options, the server's start and stop
  server.py    the aiohttp app: the page and its JSON API
  index.py     what the list knows of every saga and dead letter, in memory (pure)
  follow.py    reading Kafka: following the topics into the index, one saga by key and time
  lanes.py     one saga as lanes, sequence, causes, marks and what it waits for (pure)
  board.html, board.js, board.css   the page (no build step, nothing loaded from elsewhere)
  bench.py     how fast the list answers with tens of thousands of sagas (BENCHMARKS.md)
"""
from saga_cli.board.command import board

__all__ = ["board"]
