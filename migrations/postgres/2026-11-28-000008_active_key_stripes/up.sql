-- The count of an enterprise's ACTIVE keys, kept in stripes rather than in one counter.
-- A registration bumps its counter in the statement that inserts the key, and the row
-- it bumps stays locked until the commit is flushed: with one counter per enterprise,
-- that enterprise's registrations committed one after another, one WAL flush each
-- (about a thousand a second, however many clients). Here the count is spread over up
-- to 1024 rows, each allowed its share of the operator's limit L (stripe s:
-- L / 1024, plus one when s < L % 1024; the shares add up to exactly L), so concurrent
-- registrations bump different rows and share flushes. A registration bumps a stripe
-- with room left, a revocation takes one off any stripe above zero: the stripes add up
-- to the enterprise's ACTIVE keys, and none goes above its share, so their sum never
-- exceeds L. Stripes are created on first use.
CREATE TABLE active_key_stripes (
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    stripe INTEGER NOT NULL CHECK (stripe >= 0 AND stripe < 1024),
    active BIGINT NOT NULL CHECK (active >= 0),
    PRIMARY KEY (enterprise_id, stripe)
);

-- The counters so far, spread the way the shares are, so no stripe is above its share
-- of any limit the enterprise is within.
INSERT INTO active_key_stripes (enterprise_id, stripe, active)
SELECT e.id, s, e.active_keys / 1024 + (s < e.active_keys % 1024)::int
FROM enterprises e, generate_series(0, LEAST(e.active_keys, 1024) - 1) AS s
WHERE e.active_keys > 0;

ALTER TABLE enterprises DROP COLUMN active_keys;
