-- nginx-chat schema: the tables of the original services (API.md 8.1),
-- same names and columns, so the modules can take over a database the
-- original wrote.  Idempotent: safe to apply on every start.

CREATE TABLE IF NOT EXISTS users (
    id              INT NOT NULL AUTO_INCREMENT,
    email           VARCHAR(255) NOT NULL,
    password_hash   VARCHAR(255) NOT NULL,
    username        VARCHAR(50) NOT NULL,
    display_name    VARCHAR(100) NULL,
    status_message  VARCHAR(500) NULL,
    is_online       BOOLEAN NOT NULL,
    last_seen_at    DATETIME NULL,
    is_active       BOOLEAN NOT NULL,
    created_at      DATETIME NULL,
    updated_at      DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ix_users_email (email),
    UNIQUE KEY ix_users_username (username),
    KEY ix_users_id (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- profile images (API.md U14): the one column the original lacks
ALTER TABLE users ADD COLUMN IF NOT EXISTS
    profile_image_url VARCHAR(500) NULL;

CREATE TABLE IF NOT EXISTS friendships (
    id              INT NOT NULL AUTO_INCREMENT,
    user_id_1       INT NOT NULL,
    user_id_2       INT NOT NULL,
    status          VARCHAR(20) NULL,
    created_at      DATETIME NULL,
    updated_at      DATETIME NULL,
    deleted_at      DATETIME NULL,
    PRIMARY KEY (id),
    KEY ix_friendships_id (id),
    KEY ix_friendships_user_id_1 (user_id_1),
    KEY ix_friendships_user_id_2 (user_id_2)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS chat_rooms (
    id              INT NOT NULL AUTO_INCREMENT,
    user_1_id       INT NOT NULL,
    user_2_id       INT NOT NULL,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    PRIMARY KEY (id),
    KEY ix_chat_rooms_id (id),
    KEY ix_chat_rooms_user_1_id (user_1_id),
    KEY ix_chat_rooms_user_2_id (user_2_id),
    UNIQUE KEY ux_chat_rooms_pair (user_1_id, user_2_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS room_members (
    id              INT NOT NULL AUTO_INCREMENT,
    user_id         INT NOT NULL,
    chat_room_id    INT NOT NULL,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    PRIMARY KEY (id),
    KEY ix_room_members_user_id (user_id),
    KEY ix_room_members_chat_room_id (chat_room_id),
    CONSTRAINT fk_room_members_room FOREIGN KEY (chat_room_id)
        REFERENCES chat_rooms (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- friend service: at most one live friendship per unordered pair of users.
-- The original only checks before it inserts, so two requests sent at the
-- same moment (A to B and B to A) could both pass; this key makes the
-- second INSERT fail instead.  pair_live is NULL once a row is soft
-- deleted, and NULLs never collide, so rejected and cancelled requests
-- stay in the table and a new request can follow them.
ALTER TABLE friendships
    ADD COLUMN IF NOT EXISTS pair_low INT
        AS (LEAST(user_id_1, user_id_2)) PERSISTENT,
    ADD COLUMN IF NOT EXISTS pair_high INT
        AS (GREATEST(user_id_1, user_id_2)) PERSISTENT,
    ADD COLUMN IF NOT EXISTS pair_live TINYINT
        AS (IF(deleted_at IS NULL, 1, NULL)) PERSISTENT;

CREATE UNIQUE INDEX IF NOT EXISTS ux_friendships_live_pair
    ON friendships (pair_low, pair_high, pair_live);

-- friend service: blocks (API.md 12, F9), the original's BlockUser model.
-- One row per blocker and blocked user; the key also serves the look-ups
-- of a pair in either direction (user_id first, and the reverse key).
CREATE TABLE IF NOT EXISTS block_users (
    id              INT NOT NULL AUTO_INCREMENT,
    user_id         INT NOT NULL,
    blocked_user_id INT NOT NULL,
    created_at      DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_block_users_pair (user_id, blocked_user_id),
    KEY ix_block_users_blocked_user_id (blocked_user_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
