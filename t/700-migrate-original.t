# ./build.sh migrate on a database the original services created and
# wrote (t/fixtures): the schema check at start names what is missing,
# a dry run plans and changes nothing, the migration merges the rooms and
# friendships the original let double and adds the keys, and then the old
# users, their tokens, rooms, messages and friends work through nginx.
# A second migration has nothing to do.

use strict;
use warnings;

use Test::More;
use File::Basename qw(dirname);
use File::Spec;
use Time::HiRes qw(sleep time);

use Test::Nginx::Chat;
use ChatStack;

my $top = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..'));
my $mysql_port = $ENV{TEST_NGINX_MYSQL_PORT} // 13306;
my $mongo_port = $ENV{TEST_NGINX_MONGO_PORT} // 27117;
my $password = 'Old#pass1';

# a database of this file's own, in MariaDB and in MongoDB
my $db = "chat_orig_$$";
$ENV{TEST_NGINX_MYSQL_DATABASE} = $db;
$ENV{TEST_NGINX_MONGO_DATABASE} = 'chat_orig';
my $mongo_db = ChatStack::mongo_database();

# what migrate and the fixture's loader take
my %datastores = (
    CHAT_MYSQL_HOST => '127.0.0.1', CHAT_MYSQL_PORT => $mysql_port,
    CHAT_MYSQL_USER => 'chat', CHAT_MYSQL_PASSWORD => 'chatpw',
    CHAT_MYSQL_DATABASE => $db,
    CHAT_MONGO_URI => "mongodb://127.0.0.1:$mongo_port/",
    CHAT_MONGO_PORT => $mongo_port, CHAT_MONGO_DATABASE => $mongo_db,
);

# SQL as root: statements, or a file into the database $in (the file's)
sub root_sql {
    my ($sql, $file, $in) = @_;
    my $cmd = "mariadb --no-defaults -uroot -h127.0.0.1 -P$mysql_port "
            . "--protocol=tcp -N -B";
    $cmd .= " '" . ($in // $db) . "'";
    $cmd .= " < '$file'" if defined $file;
    open(my $fh, '|-', $cmd) or die "mariadb: $!";
    print {$fh} $sql // '';
    close $fh or die "mariadb failed: " . ($sql // $file) . "\n";
}

# a command with the datastores in its environment: (exit status, output)
sub run_with_datastores {
    my (@cmd) = @_;
    local @ENV{keys %datastores} = values %datastores;
    my $cmd = join ' ', map { "'$_'" } @cmd;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub migrate {
    my (@args) = @_;
    return run_with_datastores('bash', "$top/build.sh", 'migrate', @args);
}

sub fixture {
    my (@args) = @_;
    my ($rc, $out) = run_with_datastores('/usr/bin/python3',
        "$top/t/fixtures/original-data.py", @args);
    die "original-data.py @args: $out\n" if $rc;
    return json_decode($out) // die "original-data.py @args: $out\n";
}

# a pattern of one line of output, given in parts
sub line_re {
    my $re = join '', @_;
    return qr/$re/m;
}

# valgrind runs one worker
my $workers = Test::Nginx::Chat::Process::valgrind_enabled() ? 1 : 2;

sub start_chat {
    return start_nginx_with(
        port        => file_port(70),
        workers     => $workers,
        master      => 1,
        log_level   => 'info',
        main_config => chat_main_config(),
        http_config => chat_http_config(),
        config      => 'location /api/auth { chat_user; }'
                     . ' location /api/profile { chat_user; }'
                     . ' location /api/users { chat_user; }'
                     . ' location /api/friends { chat_friend; }'
                     . ' location /api/chat-rooms { chat_msg; }'
                     . ' location /api/messages { chat_msg; }',
    );
}

# the lines of the error log matching $re, waiting up to 10 s for $want
sub log_lines {
    my ($ngx, $re, $want) = @_;
    my @lines;
    my $until = time + 10;
    while (1) {
        @lines = grep { /$re/ } split /\n/, $ngx->error_log;
        last if @lines >= $want || time > $until;
        sleep 0.1;
    }
    return @lines;
}


# ---- the original's database

root_sql("DROP DATABASE IF EXISTS `$db`; CREATE DATABASE `$db`;"
         . " GRANT ALL ON `$db`.* TO 'chat'\@'%';", undef, 'mysql');
root_sql(undef, "$top/t/fixtures/original-mysql.sql");

# bcrypt as passlib writes it, made by libcrypt
my @b64 = ('.', '/', 'A' .. 'Z', 'a' .. 'z', 0 .. 9);
my $hash = crypt($password,
                 '$2b$12$' . join('', map { $b64[rand @b64] } 1 .. 22));
like($hash, qr/^\$2b\$12\$[.\/A-Za-z0-9]{53}\z/, 'a $2b$12$ hash');

my $orig = fixture('load', $hash);
my %user = %{ $orig->{users} };
my %pair = %{ $orig->{pairs} };
is(scalar @{ $pair{'alice-bob'}{rooms} }, 2, 'the original left two rooms '
   . 'for alice and bob');


# ---- before: the check at start names what is missing

my $ngx = start_chat();
my @lacks = log_lines($ngx, qr/chat schema: database "\Q$db\E" lacks/,
                      $workers);
is(scalar @lacks, $workers, 'each worker logs the missing schema once');
like($lacks[0], qr/column users\.profile_image_url/, '... the column');
like($lacks[0], qr/unique key chat_rooms\.ux_chat_rooms_pair/, '... the '
     . 'rooms\' key');
like($lacks[0], qr/unique key friendships\.ux_friendships_live_pair/,
     '... the friendships\' key');
like($lacks[0], qr/run \.\/build\.sh migrate/, '... and what to run');
stop_nginx($ngx);


# ---- a dry run plans and changes nothing

my $before = fixture('dump');
my ($rc, $out) = migrate('--dry-run');
is($rc, 0, 'dry run succeeds') or diag $out;
like($out, qr/^plan: users: add column profile_image_url/m,
     'dry run: the column is planned');
my ($ab1, $ab2) = @{ $pair{'alice-bob'}{rooms} };
like($out, line_re("^plan: chat_rooms: rooms $ab2 of users \\d+ and \\d+",
                  " merged into room $ab1 \\(2 messages, 1",
                  " message_read_status, 1 message_reactions, 1",
                  " notifications\\)"),
     'dry run: the merge of the rooms is planned');
like($out, qr/nothing changed/, 'dry run: says it changed nothing');
is_deeply(fixture('dump'), $before, 'dry run: tables, rows and documents '
          . 'as they were');


# ---- the migration

($rc, $out) = migrate();
is($rc, 0, 'migrate succeeds') or diag $out;
my $keep_ab = $pair{'alice-bob'}{rooms}[0];
my $keep_bc = $pair{'bob-carol'}{rooms}[0];
like($out, line_re("^\\+ chat_rooms: rooms \\d+, \\d+ of users $user{bob}{id}",
                  " and $user{carol}{id} merged into room $keep_bc "),
     'three rooms of bob and carol merged into the first');
like($out, line_re("^\\+ friendships: users $user{alice}{id} and",
                  " $user{bob}{id}: kept \\d+ \\(accepted\\)"),
     'the accepted one of alice and bob\'s friendships kept');
like($out, qr/^\+ friendships: users $user{bob}{id} and $user{dave}{id}:/m,
     'bob\'s two requests to dave collapsed');
like($out, qr/^\+ chat_rooms: add UNIQUE KEY ux_chat_rooms_pair/m,
     'the rooms\' unique key added');

# every document of a pair is in its one room
my $after = fixture('dump');
for my $name (sort keys %pair) {
    my $p = $pair{$name};
    my ($keep, @gone) = @{ $p->{rooms} };
    my %gone = map { $_ => 1 } @gone;

    my @rooms = grep { $_->[0] == $keep || $gone{ $_->[0] } }
                @{ $after->{chat_rooms} };
    is(scalar @rooms, 1, "$name: one room");
    is($rooms[0][0], $keep, "$name: the lowest id kept");

    is(scalar(grep { ($_->[1] // 0) == $keep } @{ $after->{messages} }),
       $p->{messages}, "$name: every message in room $keep");
    is(scalar(grep { ($_->[1] // 0) == $keep }
                   @{ $after->{message_read_status} }),
       $p->{reads}, "$name: every read record in room $keep");
    is(scalar(grep { ($_->[1] // 0) == $keep }
                   @{ $after->{message_reactions} }),
       $p->{reactions}, "$name: every reaction in room $keep");
    is(scalar(grep { ($_->[2] // 0) == $keep }
                   @{ $after->{notifications} }),
       $p->{notifications}, "$name: every notification names room $keep");
}
my $total = 0;
$total += $_->{messages} for values %pair;
is(scalar @{ $after->{messages} }, $total, 'no message lost');
my %room_ids = map { $_->[0] => 1 } @{ $after->{chat_rooms} };
is_deeply([grep { !$room_ids{ $_->[1] // $_->[2] } }
               map { @{ $after->{$_} } }
               qw(messages message_read_status message_reactions
                  notifications)],
          [], 'no document names a room that is gone');


# ---- after: nginx on the migrated database

$ngx = start_chat();
$ChatStack::Base = $ngx->url('');

is(scalar log_lines($ngx, qr/chat schema: database "\Q$db\E" has what/,
                    $workers),
   $workers, 'the check at start finds what the modules need');
is(scalar log_lines($ngx, qr/chat schema: .* lacks/, 0), 0,
   '... and nothing missing');

my %token;
for my $name (sort keys %user) {
    my ($status, $body) = api(POST => '/api/auth/login/json', undef,
                              { email => $user{$name}{email},
                                password => $password });
    is($status, 200, "$name logs in with the original's bcrypt hash");
    $token{$name} = $body->{access_token};
}

# a token as the original mints it: HS256, sub a string, email, exp, type
my $old = make_jwt({ alg => 'HS256', typ => 'JWT' },
                   { sub => "$user{alice}{id}",
                     email => $user{alice}{email},
                     exp => time() + 7200, type => 'access' },
                   $ENV{TEST_NGINX_JWT_SECRET}
                   // 'change-me-nginx-chat-secret');
my ($status, $body) = api(GET => '/api/profile/me', $old);
is($status, 200, 'a token minted the original\'s way is accepted');
is($body->{username}, 'alice', '... for its user');

# the rooms and their messages
($status, $body) = api(GET => "/api/messages/$keep_ab?limit=100",
                       $token{alice});
is($status, 200, 'alice reads her room with bob');
is(scalar @{ $body->{messages} // [] }, $pair{'alice-bob'}{messages},
   '... with the messages of both old rooms');
is($body->{total_count}, $pair{'alice-bob'}{messages}, '... all counted');

($status) = api(GET => "/api/chat-rooms/$pair{'alice-bob'}{rooms}[1]",
                $token{alice});
is($status, 404, 'the merged room is gone');

for (1 .. 5) {
    ($status, $body) = api(GET => "/api/chat-rooms/check/$user{bob}{id}",
                           $token{alice});
    is($body->{id}, $keep_ab, "get-or-create $_ returns the existing room");
}
is(sql("SELECT COUNT(*) FROM chat_rooms WHERE user_1_id = $user{alice}{id}"
       . " AND user_2_id = $user{bob}{id}"), 1, '... and makes no other');

for (1 .. 3) {
    api(GET => "/api/chat-rooms/check/$user{dave}{id}", $token{bob});
}
is(sql("SELECT COUNT(*) FROM chat_rooms WHERE user_1_id = $user{bob}{id}"
       . " AND user_2_id = $user{dave}{id}"), 1,
   'a new pair gets one room from three calls');

# friends: each once
my %friends = (alice => ['bob'], bob => ['alice'], carol => ['dave'],
               dave => ['carol']);
for my $name (sort keys %friends) {
    ($status, $body) = api(GET => '/api/friends/list', $token{$name});
    is($status, 200, "${name}'s friends");
    is_deeply([map { $_->{username} } @{ $body // [] }], $friends{$name},
              "${name}'s friends, each once");
}

($status, $body) = api(GET => '/api/friends/requests', $token{dave});
is_deeply([map { $_->{username} } @{ $body->{received_requests} // [] }],
          ['bob'], 'bob\'s double request reaches dave once');
($status, $body) = api(GET => '/api/friends/requests', $token{alice});
is_deeply([map { $_->{username} } @{ $body->{received_requests} // [] }],
          ['carol'], 'carol\'s request to alice is still there');

# the user table takes new users: register used to commit and answer 503
($status, $body) = api(POST => '/api/auth/register', undef,
                       { email => 'erin@example.com', username => 'erin',
                         password => 'New#pass1' });
is($status, 201, 'a new user registers');

stop_nginx($ngx);


# ---- rooms stored the other way round, a member row of a merged room

my $db_b = "${db}_b";
root_sql("DROP DATABASE IF EXISTS `$db_b`; CREATE DATABASE `$db_b`;"
         . " GRANT ALL ON `$db_b`.* TO 'chat'\@'%';", undef, 'mysql');
root_sql(undef, "$top/t/fixtures/original-mysql.sql", $db_b);
root_sql("INSERT INTO chat_rooms (id, user_1_id, user_2_id, created_at,"
         . " updated_at) VALUES (1, 5, 3, NOW(), NOW()),"
         . " (2, 3, 5, NOW(), NOW()), (3, 7, 6, NOW(), NOW());"
         . " INSERT INTO room_members (user_id, chat_room_id, created_at,"
         . " updated_at) VALUES (3, 2, NOW(), NOW());", undef, $db_b);
{
    local $datastores{CHAT_MYSQL_DATABASE} = $db_b;
    local $datastores{CHAT_MONGO_DATABASE} = "${mongo_db}_b";
    ($rc, $out) = migrate();
}
is($rc, 0, 'migrate succeeds on rooms stored the other way round')
    or diag $out;
like($out, qr/^\+ chat_rooms: rooms 2 of users 3 and 5 merged into room 1 /m,
     '... a room merged into one stored the other way round');
like($out, qr/^\+ chat_rooms: room 1 of users 3 and 5 stored as \(5, 3\),/m,
     '... which is turned round');
like($out, qr/^\+ chat_rooms: room 3 of users 6 and 7 stored as \(7, 6\),/m,
     '... as is one alone');
my $rows = do {
    local $ENV{TEST_NGINX_MYSQL_DATABASE} = $db_b;
    mysql_cmd('SELECT id, user_1_id, user_2_id FROM chat_rooms ORDER BY id;'
              . ' SELECT chat_room_id FROM room_members');
};
is($rows, "1\t3\t5\n3\t6\t7\n1", '... the rooms (smaller, larger), the '
   . 'member row in the room kept');
root_sql("DROP DATABASE `$db_b`;", undef, 'mysql');


# ---- the old services make a duplicate while the key is being added:
# a room inserted in a transaction that the ALTER TABLE has to wait for

my $db_c = "${db}_c";
root_sql("DROP DATABASE IF EXISTS `$db_c`; CREATE DATABASE `$db_c`;"
         . " GRANT ALL ON `$db_c`.* TO 'chat'\@'%';", undef, 'mysql');
root_sql(undef, "$top/t/fixtures/original-mysql.sql", $db_c);
root_sql("INSERT INTO chat_rooms (user_1_id, user_2_id, created_at,"
         . " updated_at) VALUES (1, 2, NOW(), NOW()), (1, 2, NOW(), NOW());",
         undef, $db_c);

open(my $late, '|-', "mariadb --no-defaults -uroot -h127.0.0.1"
     . " -P$mysql_port --protocol=tcp '$db_c'") or die "mariadb: $!";
$late->autoflush(1);
print {$late} "BEGIN; INSERT INTO chat_rooms (user_1_id, user_2_id,"
    . " created_at, updated_at) VALUES (1, 2, NOW(), NOW());\n";

my $job = do {
    local $datastores{CHAT_MYSQL_DATABASE} = $db_c;
    local $datastores{CHAT_MONGO_DATABASE} = "${mongo_db}_c";
    fork_job(sub { my ($rc, $out) = migrate(); { rc => $rc, out => $out } });
};

my $waiting = '';
for (1 .. 300) {
    $waiting = `mariadb --no-defaults -uroot -h127.0.0.1 -P$mysql_port \\
        --protocol=tcp -N -B -e "SELECT STATE FROM
        information_schema.PROCESSLIST WHERE DB = '$db_c'
        AND INFO LIKE 'ALTER TABLE chat_rooms%'"`;
    last if $waiting =~ /metadata lock/ || job_done($job);
    sleep 0.1;
}
like($waiting, qr/metadata lock/, 'the key waits for the open transaction');
print {$late} "COMMIT;\n";
close $late;

my $res = job_result($job) // {};
is($res->{rc}, 0, 'migrate succeeds all the same') or diag $res->{out};
like($res->{out} // '', qr/Duplicate entry.*resolving again/,
     '... resolving the duplicate that came meanwhile');
like($res->{out} // '', qr/^\+ chat_rooms: rooms 3 of users 1 and 2 merged/m,
     '... into the room kept');
unlike($res->{out} // '', qr/\([1-9]\d* messages/,
       '... in its own MongoDB database');
{
    local $ENV{TEST_NGINX_MYSQL_DATABASE} = $db_c;
    is(sql('SELECT id FROM chat_rooms'), 1, '... one room is left');
}
root_sql("DROP DATABASE `$db_c`;", undef, 'mysql');


# ---- a second run

($rc, $out) = migrate();
is($rc, 0, 'a second migrate succeeds');
like($out, qr/^migrate: nothing to do$/m, '... with nothing to do')
    or diag $out;


# ---- clean up

root_sql("DROP DATABASE `$db`;", undef, 'mysql');
run_with_datastores('/usr/bin/python3', '-c',
    "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:$mongo_port/')"
    . ".drop_database('$mongo_db')");

done_testing();
