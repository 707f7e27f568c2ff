"""`microshop order rebuild-projections`: replaying the event store into fresh views gives
exactly the views the live projector built, and the tool reports what it did."""
import subprocess
import uuid

from conftest import BINARY, SLOW, clean_env, ident
from shop import start_shop  # noqa: F401

READ_DB = "order_read.db"
VIEW_SQL = ("SELECT id, user_id, status, total_cents, currency, version, position, created_at, "
            "updated_at, data FROM order_views ORDER BY id")
INDEX_SQL = "SELECT user_id, created_at, order_id FROM user_order_views ORDER BY order_id"


def place(s, user, qty):
    """A confirmed checkout of `qty` units on shop `s`."""
    r = s.checkout(user, [(s.stocked(250), qty)])
    assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text
    return r


def views(db):
    return db.query(VIEW_SQL, file=READ_DB), db.query(INDEX_SQL, file=READ_DB)


def rebuild(db):
    return subprocess.run([BINARY, "order", "rebuild-projections", "--data", db.data_dir],
                          capture_output=True, text=True, timeout=60 * SLOW,
                          env=clean_env(db.env), stdin=subprocess.DEVNULL)


def test_rebuild_equals_live_projection(start_shop):
    s = start_shop(user=False)
    users = [str(uuid.uuid4()) for _ in range(3)]
    last = 0
    for i in range(12):
        r = place(s, users[i % 3], i + 1)
        order = r.json()
        last = int(r.headers["X-Position"])
        if i % 4 == 1:  # cancelled by its owner
            r = s.request("POST", f"/api/v1/orders/{order['id']}/cancel", user=users[i % 3],
                          json={"reason": "changed my mind"})
            assert r.status_code == 200, r.text
            last = int(r.headers["X-Position"])
        if i % 4 == 2:  # shipped, then delivered, by an admin
            version = order["version"]
            for status in ("shipped", "delivered"):
                r = s.request("PATCH", f"/api/v1/orders/{order['id']}/status",
                              user=users[0], role="admin", json={"status": status},
                              headers={"If-Match": f'"{version}"'})
                assert r.status_code == 200, r.text
                last, version = int(r.headers["X-Position"]), r.json()["version"]
    # the live views, once the projector has caught up with the last write
    r = s.get(f"/api/v1/users/{users[0]}/orders", headers={**ident(users[0]),
                                                          "X-Min-Position": str(last)})
    assert r.status_code == 200, r.text
    s.stop("order")
    live_views, live_index = views(s.db)
    assert len(live_views) == 12 and len(live_index) == 12
    events = s.db.count("events")

    p = rebuild(s.db)
    assert p.returncode == 0, p.stderr
    assert f"rebuilt 12 order views from {events} events" in p.stdout, p.stdout
    rebuilt_views, rebuilt_index = views(s.db)
    assert rebuilt_views == live_views
    assert rebuilt_index == live_index
    checkpoint = s.db.query("SELECT position FROM projection_checkpoints", file=READ_DB)
    assert checkpoint == [(last,)]

    # a second rebuild on unchanged events changes nothing either
    assert rebuild(s.db).returncode == 0
    assert views(s.db) == (live_views, live_index)


def three_orders_projected(s, user):
    """Places three orders for `user`, waits until the views show them, stops the server;
    returns their ids."""
    ids = [place(s, user, n).json()["id"] for n in (1, 2, 3)]
    r = s.get(f"/api/v1/orders/{ids[-1]}",
              headers={**ident(user), "X-Min-Position": str(s.db.count("events"))})
    assert r.status_code == 200
    s.stop("order")
    return ids


def test_rebuild_repairs_damaged_views(start_shop):
    s = start_shop(user=False)
    ids = three_orders_projected(s, str(uuid.uuid4()))
    good = views(s.db)

    # damage the read model behind the service's back: it is derived data
    import sqlite3
    if s.db.name:
        import psycopg2
        conn = psycopg2.connect(s.db.url)
        conn.autocommit = True
        conn.cursor().execute("DELETE FROM order_views WHERE id = %s", (ids[0],))
        conn.cursor().execute("UPDATE order_views SET status = 'bogus'")
        conn.close()
    else:
        conn = sqlite3.connect(f"{s.db.data_dir}/{READ_DB}")
        conn.execute("DELETE FROM order_views WHERE id = ?", (ids[0],))
        conn.execute("UPDATE order_views SET status = 'bogus'")
        conn.commit()
        conn.close()
    assert views(s.db) != good

    p = rebuild(s.db)
    assert p.returncode == 0, p.stderr
    assert views(s.db) == good


def test_read_database_migration_3_keeps_the_views(start_shop):
    """A read database made before migration 3 (views in rowid tables) is moved to WITHOUT
    ROWID tables on start, every view and list row kept, and migration 4 (saga_open) follows
    (SQLite; a no-op on PostgreSQL)."""
    s = start_shop(user=False)
    user = str(uuid.uuid4())
    ids = three_orders_projected(s, user)
    before = views(s.db)
    if not s.db.name:  # SQLite: put the tables back as the second migration left them
        import sqlite3
        conn = sqlite3.connect(f"{s.db.data_dir}/{READ_DB}")
        conn.executescript(
            "CREATE TABLE ov AS SELECT * FROM order_views; DROP TABLE order_views;"
            "CREATE TABLE order_views (id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
            " status TEXT NOT NULL, total_cents BIGINT NOT NULL, currency TEXT NOT NULL,"
            " version BIGINT NOT NULL, position BIGINT NOT NULL, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, data TEXT NOT NULL);"
            "INSERT INTO order_views SELECT id, user_id, status, total_cents, currency,"
            " version, position, created_at, updated_at, data FROM ov; DROP TABLE ov;"
            "CREATE TABLE ui AS SELECT * FROM user_order_views; DROP TABLE user_order_views;"
            "CREATE TABLE user_order_views (user_id TEXT NOT NULL, created_at TEXT NOT NULL,"
            " order_id TEXT NOT NULL, PRIMARY KEY (user_id, created_at, order_id));"
            "INSERT INTO user_order_views SELECT * FROM ui; DROP TABLE ui;"
            "DELETE FROM schema_migrations WHERE version IN (3, 4);")
        conn.close()
        assert "WITHOUT ROWID" not in s.db.query(
            "SELECT sql FROM sqlite_master WHERE name = 'order_views'", file=READ_DB)[0][0]

    s2 = s.start("order")
    r = s2.get(f"/api/v1/users/{user}/orders", headers=ident(user))
    assert r.status_code == 200, r.text
    assert sorted(o["id"] for o in r.json()["items"]) == sorted(ids)
    s.stop("order")
    assert views(s.db) == before
    if not s.db.name:
        for table in ("order_views", "user_order_views"):
            sql = s.db.query("SELECT sql FROM sqlite_master WHERE name = ?", (table,),
                             file=READ_DB)[0][0]
            assert sql.endswith("WITHOUT ROWID"), sql
        assert s.db.query("SELECT MAX(version) FROM schema_migrations", file=READ_DB) == [(4,)]
        assert s.db.query("SELECT count(*) FROM order_views WHERE saga_open = 0",
                          file=READ_DB) == [(len(ids),)]
