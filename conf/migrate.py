"""nginx-chat migrate: bring a MySQL/MariaDB database and its MongoDB up to
what the modules need (conf/schema.sql), from empty or from a database the
original services wrote.

    /usr/bin/python3 conf/migrate.py [--dry-run]

The datastores come from the environment, all of them required (build.sh
sets its defaults): CHAT_MYSQL_HOST, CHAT_MYSQL_PORT, CHAT_MYSQL_USER,
CHAT_MYSQL_PASSWORD, CHAT_MYSQL_DATABASE, CHAT_MONGO_URI,
CHAT_MONGO_DATABASE.

What it does, in this order, each change on a line of its own:
  - creates the tables that are missing, as schema.sql writes them;
  - adds the columns that are missing (one ALTER TABLE per table);
  - before adding a unique key, resolves the rows that would violate it:
    rooms of one pair are merged into the one with the lowest id (their
    messages, read records, reactions and notifications in MongoDB are
    moved to it first), live friendships of one pair are collapsed into
    the most advanced one (accepted, then pending, then anything else;
    the lowest id among equals), the others soft deleted;
  - adds the keys and foreign keys that are missing.

Everything is checked in information_schema first, so a second run finds
nothing to do; the SQL avoids the IF NOT EXISTS forms of ALTER that MySQL 8
lacks.  The old services may run meanwhile: a duplicate they make while a
key is being added is resolved and the key tried again.  Exit status: 0
done (or nothing to do), 1 failed.
"""

import os
import re
import sys

import pymysql
import pymongo
from bson.int64 import Int64


SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'schema.sql')

# the most advanced state of a friendship wins a collapse
FRIENDSHIP_RANK = {'accepted': 3, 'pending': 2, 'rejected': 1}

# collections whose documents name a room, and the field that does
ROOM_FIELDS = (('messages', 'room_id'),
               ('message_read_status', 'room_id'),
               ('message_reactions', 'room_id'),
               ('notifications', 'data.room_id'))

ER_DUP_ENTRY = 1062
KEY_ATTEMPTS = 3


class MigrateError(Exception):
    pass


# ---------------------------------------------------------------- schema.sql

def split_items(body):
    """The comma-separated items of a CREATE TABLE body, at paren depth 0."""
    items, depth, cur = [], 0, []
    for ch in body:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            items.append(''.join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append(''.join(cur))
    return [' '.join(i.split()) for i in items if i.strip()]


def parse_schema(path):
    """[(table, create statement, columns, keys, foreign keys)] in order.

    columns: [(name, definition)]; keys: [(name, unique, item)];
    foreign keys: [(columns, referenced table, item)].
    """
    with open(path) as f:
        text = '\n'.join(re.sub(r'--(\s.*)?$', '', line)
                         for line in f.read().split('\n'))

    tables = []
    for stmt in text.split(';'):
        stmt = stmt.strip()
        m = re.match(r'CREATE TABLE (\w+) \((.*)\)([^)]*)$', stmt, re.S)
        if not m:
            if stmt:
                raise MigrateError('schema.sql: not a CREATE TABLE: '
                                   + stmt[:60])
            continue

        name, body = m.group(1), m.group(2)
        columns, keys, fks = [], [], []
        for item in split_items(body):
            word = item.split()[0].upper()
            if word == 'PRIMARY':
                keys.append(('PRIMARY', True, item))
            elif word in ('UNIQUE', 'KEY', 'INDEX'):
                k = re.match(r'(?:UNIQUE )?(?:KEY|INDEX) (\w+) ', item, re.I)
                keys.append((k.group(1), word == 'UNIQUE', item))
            elif word == 'CONSTRAINT':
                k = re.search(r'FOREIGN KEY \(([^)]*)\) REFERENCES (\w+)',
                              item, re.I)
                cols = tuple(c.strip() for c in k.group(1).split(','))
                fks.append((cols, k.group(2), item))
            else:
                columns.append((item.split()[0], item))

        tables.append((name, stmt, columns, keys, fks))

    return tables


# ---------------------------------------------------------------- the run

class Migration:

    def __init__(self, env, dry_run):
        self.env = env
        self.dry_run = dry_run
        self.changes = 0
        self.db = env['CHAT_MYSQL_DATABASE']
        self.mongo_db = None

        try:
            self.sql = pymysql.connect(
                host=env['CHAT_MYSQL_HOST'], port=int(env['CHAT_MYSQL_PORT']),
                user=env['CHAT_MYSQL_USER'],
                password=env['CHAT_MYSQL_PASSWORD'], database=self.db,
                charset='utf8mb4', autocommit=True, connect_timeout=10)
        except pymysql.MySQLError as e:
            raise MigrateError('MySQL %s:%s/%s: %s'
                               % (env['CHAT_MYSQL_HOST'],
                                  env['CHAT_MYSQL_PORT'], self.db, e))

    # MongoDB only when rooms are merged: a schema change alone needs none
    def mongo(self):
        if self.mongo_db is None:
            client = pymongo.MongoClient(self.env['CHAT_MONGO_URI'],
                                         serverSelectionTimeoutMS=10000)
            try:
                client.admin.command('ping')
            except pymongo.errors.PyMongoError as e:
                raise MigrateError('MongoDB %s: %s'
                                   % (self.env['CHAT_MONGO_URI'], e))
            self.mongo_db = client[self.env['CHAT_MONGO_DATABASE']]
        return self.mongo_db

    def query(self, sql, args=None):
        with self.sql.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def change(self, what, *sql):
        """Reports a change and, unless a dry run, executes its SQL."""
        self.note(what)
        if not self.dry_run:
            for s in sql:
                self.query(s)

    def note(self, what):
        """Reports a change that the caller makes itself."""
        self.changes += 1
        print(('plan: ' if self.dry_run else '+ ') + what, flush=True)

    # ------------------------------------------------------------ catalog

    def tables(self):
        return {r[0] for r in self.query(
            'SELECT TABLE_NAME FROM information_schema.TABLES '
            'WHERE TABLE_SCHEMA = %s', (self.db,))}

    def columns(self, table):
        return {r[0] for r in self.query(
            'SELECT COLUMN_NAME FROM information_schema.COLUMNS '
            'WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s', (self.db, table))}

    def keys(self, table):
        return {r[0] for r in self.query(
            'SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS '
            'WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s', (self.db, table))}

    def foreign_keys(self, table):
        """{(columns, referenced table)} of the table's foreign keys."""
        fks = {}
        for name, col, ref in self.query(
                'SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME '
                'FROM information_schema.KEY_COLUMN_USAGE '
                'WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s '
                'AND REFERENCED_TABLE_NAME IS NOT NULL '
                'ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION',
                (self.db, table)):
            cols, _ = fks.get(name, ((), ref))
            fks[name] = (cols + (col,), ref)
        return set(fks.values())

    # ------------------------------------------------------------ steps

    def run(self):
        schema = parse_schema(SCHEMA)
        existing = self.tables()

        for table, create, columns, keys, fks in schema:
            if table not in existing:
                self.change('create table %s' % table, create)
                continue

            have = self.columns(table)
            missing = [d for n, d in columns if n not in have]
            if missing:
                self.change('%s: add column%s %s'
                            % (table, 's' if len(missing) > 1 else '',
                               ', '.join(missing)),
                            'ALTER TABLE %s %s'
                            % (table, ', '.join('ADD COLUMN ' + d
                                                for d in missing)))

        for table, create, columns, keys, fks in schema:
            if table not in existing:
                continue

            have = self.keys(table)
            for name, unique, item in keys:
                if name not in have:
                    self.add_key(table, name, unique, item)

            have = self.foreign_keys(table)
            for cols, ref, item in fks:
                if (cols, ref) not in have:
                    self.add_foreign_key(table, cols, ref, item)

    def add_key(self, table, name, unique, item):
        resolve = RESOLVERS.get(name) if unique else None

        for attempt in range(KEY_ATTEMPTS):
            if resolve:
                resolve(self)

            if attempt == 0:
                self.note('%s: add %s' % (table, item))
            if self.dry_run:
                return

            try:
                self.query('ALTER TABLE %s ADD %s' % (table, item))
                return
            except pymysql.MySQLError as e:
                if e.args[0] != ER_DUP_ENTRY or not resolve:
                    raise MigrateError('%s: adding %s: %s' % (table, name, e))
                # the old services made a duplicate meanwhile
                print('  %s: %s, resolving again' % (table, e.args[1]),
                      flush=True)

        raise MigrateError('%s: %s: new duplicates kept coming in %d tries'
                           % (table, name, KEY_ATTEMPTS))

    def add_foreign_key(self, table, cols, ref, item):
        if ref == 'chat_rooms' and table == 'room_members':
            self.orphan_members()
        self.note('%s: add %s' % (table, item))
        if not self.dry_run:
            try:
                self.query('ALTER TABLE %s ADD %s' % (table, item))
            except pymysql.MySQLError as e:
                raise MigrateError('%s: adding %s: %s' % (table, item, e))

    # ------------------------------------------------------------ resolvers

    def merge_rooms(self):
        """Rooms of one unordered pair merged into the lowest id; rows
        stored the other way round (user_1_id > user_2_id) turned round,
        since get-or-create looks for the smaller id first."""
        rows = self.query(
            'SELECT LEAST(user_1_id, user_2_id), '
            'GREATEST(user_1_id, user_2_id), id, user_1_id, updated_at '
            'FROM chat_rooms ORDER BY 1, 2, id')

        groups = {}
        for lo, hi, rid, u1, updated in rows:
            groups.setdefault((lo, hi), []).append((rid, u1, updated))

        for (lo, hi), rooms in groups.items():
            keep, u1, _ = rooms[0]
            dups = [r[0] for r in rooms[1:]]
            updated = max(r[2] for r in rooms)

            if dups:
                self.merge_room_group(lo, hi, keep, dups, updated)

            if u1 != lo:
                self.change('chat_rooms: room %d of users %d and %d stored '
                            'as (%d, %d), turned round' % (keep, lo, hi,
                                                           hi, lo),
                            'UPDATE chat_rooms SET user_1_id = %d, '
                            'user_2_id = %d WHERE id = %d' % (lo, hi, keep))

    def merge_room_group(self, lo, hi, keep, dups, updated):
        mdb = self.mongo()
        counts = []
        for coll, field in ROOM_FIELDS:
            n = mdb[coll].count_documents({field: {'$in': dups}})
            counts.append('%d %s' % (n, coll))

        self.note('chat_rooms: rooms %s of users %d and %d merged into '
                  'room %d (%s)' % (', '.join(map(str, dups)), lo, hi, keep,
                                    ', '.join(counts)))
        if self.dry_run:
            return

        # documents first: a room is deleted only once nothing names it;
        # and again after, for what the old services wrote meanwhile
        self.repoint(dups, keep)

        ids = ', '.join(map(str, dups))
        self.sql.begin()
        try:
            self.query('UPDATE chat_rooms SET updated_at = %s '
                       'WHERE id = %s AND updated_at < %s',
                       (updated, keep, updated))
            self.query('UPDATE room_members SET chat_room_id = %d '
                       'WHERE chat_room_id IN (%s)' % (keep, ids))
            self.query('DELETE FROM chat_rooms WHERE id IN (%s)' % ids)
            self.sql.commit()
        except pymysql.MySQLError as e:
            self.sql.rollback()
            raise MigrateError('chat_rooms: merging into %d: %s' % (keep, e))

        self.repoint(dups, keep)

    def repoint(self, dups, keep):
        mdb = self.mongo()
        for coll, field in ROOM_FIELDS:
            # notifications keep their numbers as 64-bit integers
            value = Int64(keep) if coll == 'notifications' else keep
            mdb[coll].update_many({field: {'$in': dups}},
                                  {'$set': {field: value}})

    def collapse_friendships(self):
        """Live friendships of one unordered pair: the most advanced kept,
        the others soft deleted as a rejection or a cancellation is."""
        rows = self.query(
            'SELECT LEAST(user_id_1, user_id_2), '
            'GREATEST(user_id_1, user_id_2), id, status FROM friendships '
            'WHERE deleted_at IS NULL ORDER BY 1, 2, id')

        groups = {}
        for lo, hi, fid, status in rows:
            groups.setdefault((lo, hi), []).append((fid, status))

        for (lo, hi), rows in groups.items():
            if len(rows) < 2:
                continue

            rows.sort(key=lambda r: (-FRIENDSHIP_RANK.get(r[1], 0), r[0]))
            keep, status = rows[0]
            drop = [r[0] for r in rows[1:]]
            ids = ', '.join(map(str, drop))

            self.change('friendships: users %d and %d: kept %d (%s), soft '
                        'deleted %s' % (lo, hi, keep, status,
                                        ', '.join('%d (%s)' % r
                                                  for r in rows[1:])),
                        'UPDATE friendships SET deleted_at = UTC_TIMESTAMP(),'
                        ' updated_at = UTC_TIMESTAMP() WHERE id IN (%s) '
                        'AND deleted_at IS NULL' % ids)

    def orphan_members(self):
        """room_members rows of rooms that are gone would fail the foreign
        key; the original never writes the table, so they are removed."""
        n = self.query('SELECT COUNT(*) FROM room_members m LEFT JOIN '
                       'chat_rooms r ON r.id = m.chat_room_id '
                       'WHERE r.id IS NULL')[0][0]
        if n:
            self.change('room_members: %d rows of rooms that do not exist '
                        'removed' % n,
                        'DELETE m FROM room_members m LEFT JOIN chat_rooms r '
                        'ON r.id = m.chat_room_id WHERE r.id IS NULL')


RESOLVERS = {
    'ux_chat_rooms_pair': Migration.merge_rooms,
    'ux_friendships_live_pair': Migration.collapse_friendships,
}


def main(argv):
    args = argv[1:]
    dry_run = '--dry-run' in args
    unknown = [a for a in args if a != '--dry-run']
    if unknown:
        print('usage: migrate.py [--dry-run]', file=sys.stderr)
        return 2

    names = ('CHAT_MYSQL_HOST', 'CHAT_MYSQL_PORT', 'CHAT_MYSQL_USER',
             'CHAT_MYSQL_PASSWORD', 'CHAT_MYSQL_DATABASE', 'CHAT_MONGO_URI',
             'CHAT_MONGO_DATABASE')
    missing = [n for n in names if n not in os.environ]
    if missing:
        print('migrate: %s not set' % ', '.join(missing), file=sys.stderr)
        return 2
    env = {n: os.environ[n] for n in names}

    print('migrate: MySQL %s:%s/%s, MongoDB database %s%s'
          % (env['CHAT_MYSQL_HOST'], env['CHAT_MYSQL_PORT'],
             env['CHAT_MYSQL_DATABASE'], env['CHAT_MONGO_DATABASE'],
             ' (dry run: nothing is changed)' if dry_run else ''),
          flush=True)

    try:
        m = Migration(env, dry_run)
        m.run()
    except (MigrateError, pymysql.MySQLError, pymongo.errors.PyMongoError) \
            as e:
        print('migrate: failed: %s' % e, file=sys.stderr)
        return 1

    if m.changes == 0:
        print('migrate: nothing to do')
    elif dry_run:
        print('migrate: %d changes planned, nothing changed' % m.changes)
    else:
        print('migrate: %d changes made' % m.changes)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
