"""Build sample_db/shop.db: a small shop with related tables, indexes and varied types.

    python sample_db/build.py [PATH]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import sqlite_utils

FIRST = ["Ada", "Grace", "Linus", "Zoë", "Søren", "Ngozi", "Hiro", "Mårten", "Chloé", "Raj"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Kierkegaard", "Okafor", "Tanaka", "Østergaard", "Patel"]
WORDS = ["lamp", "chair", "mug", "kettle", "notebook", "pen", "desk", "rug", "clock", "vase"]


def build(path: Path, seed: int = 42) -> None:
    rnd = random.Random(seed)
    path.unlink(missing_ok=True)
    db = sqlite_utils.Database(path)
    db["customers"].create(
        {"id": int, "email": str, "name": str, "joined": str, "credit": float, "note": str},
        pk="id", not_null={"email", "name"},
    )
    db["customers"].create_index(["email"], unique=True)
    db["products"].create(
        {"sku": str, "title": str, "price": float, "stock": int, "thumbnail": bytes},
        pk="sku",
    )
    db["orders"].create(
        {"id": int, "customer_id": int, "placed": str, "status": str, "total": float},
        pk="id", foreign_keys=[("customer_id", "customers", "id")],
    )
    db["orders"].create_index(["customer_id", "placed"])
    db["order_items"].create(
        {"order_id": int, "sku": str, "qty": int, "unit_price": float},
        pk=("order_id", "sku"),
        foreign_keys=[("order_id", "orders", "id"), ("sku", "products", "sku")],
    )
    db["customers"].insert_all(
        {
            "id": i,
            "email": f"customer{i}@example.com",
            "name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
            "joined": f"202{rnd.randint(0, 6)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            "credit": round(rnd.uniform(0, 500), 2) if rnd.random() < 0.7 else None,
            "note": rnd.choice([None, "VIP 🌟", "prefers email", "tab\tand\nnewline"]),
        }
        for i in range(1, 501)
    )
    skus = [f"SKU-{i:04d}" for i in range(200)]
    db["products"].insert_all(
        {
            "sku": sku,
            "title": f"{rnd.choice(['Blue', 'Oak', 'Steel', 'Linen'])} {rnd.choice(WORDS)}",
            "price": rnd.choice([9.99, 19.5, 0.1 + 0.2, 1e-3, 12345.678]),
            "stock": rnd.randint(0, 100),
            "thumbnail": rnd.randbytes(rnd.randint(0, 512)),
        }
        for sku in skus
    )
    orders, items = [], []
    for oid in range(1, 2001):
        lines = rnd.sample(skus, rnd.randint(1, 4))
        rows = [{"order_id": oid, "sku": s, "qty": rnd.randint(1, 5),
                 "unit_price": rnd.choice([9.99, 19.5, 4.25])} for s in lines]
        items += rows
        orders.append({
            "id": oid, "customer_id": rnd.randint(1, 500),
            "placed": f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}T12:00:00Z",
            "status": rnd.choice(["new", "paid", "shipped", "returned"]),
            "total": sum(r["qty"] * r["unit_price"] for r in rows),
        })
    db["orders"].insert_all(orders)
    db["order_items"].insert_all(items)
    db.create_view("revenue_by_month", "SELECT substr(placed, 1, 7) AS month, sum(total) AS revenue "
                   "FROM orders GROUP BY month")
    db.conn.commit()
    db.conn.execute("VACUUM")
    db.close()


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("shop.db"))
