# Work no answer depends on runs in the background: a send answers 201 as
# soon as the message is stored and announced; the room's updated_at touch
# that follows (by a room's first message of each second) is
# fire-and-forget, and when it fails (here: its row stays locked past
# chat_mysql_timeout) the failure is logged and counted in /metrics, while
# the message is there.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

my $ngx = start_nginx_with(
    workers     => 1,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(mysql_timeout => '1s'),
    config      => 'location /api/ { chat_msg; }'
                 . ' location = /metrics { chat_metrics; }',
);

$ChatStack::Base = $ngx->url('');

sub failures {
    my $res = http_request(GET => $ngx->url('/metrics'));
    die "metrics: $res->{status}\n" unless ($res->{status} // 0) == 200;
    return $res->{body} =~ /^chat_background_failures_total (\d+)$/m
           ? $1 : die "no chat_background_failures_total\n";
}

my ($a, $b) = (scalar sql_user('bg'), scalar sql_user('bg'));
my $token = user_token($a);
my $room = sql("INSERT INTO chat_rooms (user_1_id, user_2_id, created_at, "
    . "updated_at) VALUES ($a, $b, '2020-01-01 00:00:00', "
    . "'2020-01-01 00:00:00'); SELECT LAST_INSERT_ID()");

my ($status, $body) = api(POST => "/api/messages/$room", $token,
                          { content => 'first' });
is($status, 201, 'a send answers 201');

my $touched;
for (1 .. 30) {
    $touched = sql("SELECT updated_at > '2020-01-01' FROM chat_rooms "
                   . "WHERE id = $room");
    last if $touched;
    sleep 0.1;
}
is($touched, 1, "... and the room's updated_at moves after it");

# a room is touched by its first message of each second of the worker's
# clock (the column holds seconds): a second message within that second
# leaves updated_at alone, the first of the next second moves it again

sub next_second {
    my $t = time;
    sleep(int($t) + 1.02 - $t);
    return int(time);
}

SKIP: {
    my $second = next_second();
    api(POST => "/api/messages/$room", $token, { content => 'a second\'s first' });
    sql("UPDATE chat_rooms SET updated_at = '2020-01-01 00:00:00' "
        . "WHERE id = $room");
    ($status) = api(POST => "/api/messages/$room", $token,
                    { content => 'within the same second' });
    skip 'the sends took more than their second', 2
        if int(time) != $second;

    is($status, 201, 'a second send within the second answers 201');
    sleep 0.3;
    is(sql("SELECT updated_at FROM chat_rooms WHERE id = $room"),
       '2020-01-01 00:00:00', "... and does not touch the room again");
}

next_second();
api(POST => "/api/messages/$room", $token, { content => 'the next second' });
for (1 .. 30) {
    $touched = sql("SELECT updated_at > '2020-01-01' FROM chat_rooms "
                   . "WHERE id = $room");
    last if $touched;
    sleep 0.1;
}
is($touched, 1, "the next second's first message touches it");

# hold the room's row: the touch cannot finish within chat_mysql_timeout
# (the send is its second's first: it touches the room)

my $before = failures();

my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    mysql_cmd("START TRANSACTION; SELECT id FROM chat_rooms WHERE id = $room "
              . "FOR UPDATE; SELECT SLEEP(4); COMMIT");
    exit 0;
}
sleep 0.5;

next_second();

my $t0 = time;
($status, $body) = api(POST => "/api/messages/$room", $token,
                       { content => 'while the room is locked' });
my $took = time - $t0;

is($status, 201, 'with the room row locked, the send still answers 201');
cmp_ok($took, '<', 0.9, "... without waiting for the touch ($took s)");

my ($st, $page) = api(GET => "/api/messages/$room?limit=1", $token);
is($page->{messages}[0]{content}, 'while the room is locked',
   '... and the message is stored');

my $after = $before;
for (1 .. 40) {
    $after = failures();
    last if $after > $before;
    sleep 0.1;
}
is($after - $before, 1, 'the failed touch is counted once');
like($ngx->read_error_log(0), qr/room updated_at touch failed/,
     '... and logged');

waitpid($pid, 0);

($status) = api(POST => "/api/messages/$room", $token,
                { content => 'after the lock' });
is($status, 201, 'after the lock is released sends go on');

unlike($ngx->read_error_log(0), qr/\[(alert|crit|emerg)\]|exited on signal/,
       'no alert, no crash');

stop_nginx($ngx);

done_testing();
