"""The demo's sample database, built on the fly: a small shop with related tables,
indexes, a view and varied types (NULLs, non-ASCII text, BLOBs, inexact REALs)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

FIRST = ["Ada", "Grace", "Linus", "Zoë", "Søren", "Ngozi", "Hiro", "Mårten", "Chloé", "Raj"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Kierkegaard", "Okafor", "Tanaka", "Østergaard", "Patel"]
WORDS = ["lamp", "chair", "mug", "kettle", "notebook", "pen", "desk", "rug", "clock", "vase"]

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,
                        joined TEXT, credit REAL, note TEXT);
CREATE UNIQUE INDEX idx_customers_email ON customers(email);
CREATE TABLE products (sku TEXT PRIMARY KEY, title TEXT, price REAL, stock INTEGER,
                       thumbnail BLOB);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                     placed TEXT, status TEXT, total REAL);
CREATE INDEX idx_orders_customer_id_placed ON orders(customer_id, placed);
CREATE TABLE order_items (order_id INTEGER REFERENCES orders(id),
                          sku TEXT REFERENCES products(sku), qty INTEGER, unit_price REAL,
                          PRIMARY KEY (order_id, sku));
CREATE VIEW revenue_by_month AS SELECT substr(placed, 1, 7) AS month, sum(total) AS revenue
                                FROM orders GROUP BY month;
"""


def _customers(rnd: random.Random) -> list[tuple]:
    return [
        (
            i,
            f"customer{i}@example.com",
            f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
            f"202{rnd.randint(0, 6)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            round(rnd.uniform(0, 500), 2) if rnd.random() < 0.7 else None,
            rnd.choice([None, "VIP 🌟", "prefers email", "tab\tand\nnewline"]),
        )
        for i in range(1, 501)
    ]


def _products(rnd: random.Random, skus: list[str]) -> list[tuple]:
    return [
        (
            sku,
            f"{rnd.choice(['Blue', 'Oak', 'Steel', 'Linen'])} {rnd.choice(WORDS)}",
            rnd.choice([9.99, 19.5, 0.1 + 0.2, 1e-3, 12345.678]),
            rnd.randint(0, 100),
            rnd.randbytes(rnd.randint(0, 512)),
        )
        for sku in skus
    ]


def build(path: Path, seed: int = 42) -> None:
    """Write the sample shop to `path` (replacing it)."""
    rnd = random.Random(seed)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO customers VALUES(?, ?, ?, ?, ?, ?)", _customers(rnd))
        skus = [f"SKU-{i:04d}" for i in range(200)]
        conn.executemany("INSERT INTO products VALUES(?, ?, ?, ?, ?)", _products(rnd, skus))
        for oid in range(1, 2001):
            items = [
                (oid, sku, rnd.randint(1, 5), rnd.choice([9.99, 19.5, 4.25]))
                for sku in rnd.sample(skus, rnd.randint(1, 4))
            ]
            placed = f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}T12:00:00Z"
            status = rnd.choice(["new", "paid", "shipped", "returned"])
            total = sum(qty * price for _o, _s, qty, price in items)
            conn.execute(
                "INSERT INTO orders VALUES(?, ?, ?, ?, ?)",
                (oid, rnd.randint(1, 500), placed, status, total),
            )
            conn.executemany("INSERT INTO order_items VALUES(?, ?, ?, ?)", items)
        conn.execute("COMMIT")
    finally:
        conn.close()
