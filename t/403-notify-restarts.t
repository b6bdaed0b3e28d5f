# The notification consumer and the presence monitor through real restarts
# of the test stack's MariaDB and MongoDB (the server process is stopped
# and started again on the same port with the same data directory):
#
#   - friend and message events produced before, during and after each
#     outage all end as exactly one notification each: one frame on the
#     recipient's stream, one document in N1, and nothing of the group is
#     left pending in Redis;
#   - while MariaDB is down, message events are neither notified nor
#     acknowledged; while MongoDB is down, no event is;
#   - presence expiries before, during and after each outage mark the
#     users offline in MariaDB (is_online = 0, last_seen_at the time of the
#     expiry) once MariaDB is back; a user who is online again before
#     MariaDB is back stays online.
#
# The MongoDB stand-in of the test stack (where no mongod exists) keeps
# its data in memory: across its restart the documents stored before are
# gone, so N1 is checked for them before the restart, and afterwards for
# what was stored since.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

plan skip_all => 'needs the servers of "./build.sh test" (TEST_NGINX_WORK '
                 . 'and the pid files) to restart them'
    unless can_restart_servers();

my $slow = Test::Nginx::Chat::Process::valgrind_enabled() ? 4 : 1;

# a consumer group of this file's own, as in 402-notify-delivery.t
my $group = "notifications_r$$";

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config() . "chat_notify_consumer on;\n"
                   . "chat_notify_group $group;\n"
                   . "chat_notify_claim_idle 1s;\n"
                   . "chat_notify_batch 16;\n",
    config      => 'location /api/notifications { chat_notify; }'
                   . ' location /api/ { chat_user; }',
);

$ChatStack::Base = $ngx->url('');

wait_group($group, 'friend.events', 10);


# --- the people: a friend request recipient, a room, presence users

my $base = 840000000 + int(rand(60000000));
my ($friend_to, $sender, $message_to) = ($base + 1, $base + 2, $base + 3);

my $room = mysql_cmd("INSERT INTO chat_rooms (user_1_id, user_2_id, "
                     . "created_at, updated_at) VALUES ($sender, "
                     . "$message_to, UTC_TIMESTAMP(), UTC_TIMESTAMP()); "
                     . "SELECT LAST_INSERT_ID()");
like($room, qr/^\d+$/, "room $room of $sender and $message_to");

my @people = map { register_user() } 1 .. 6;
login_user($_) for @people;

is(mysql_cmd('SELECT SUM(is_online) FROM users WHERE id IN ('
             . join(',', map { $_->{id} } @people) . ')'),
   scalar @people, 'the presence users are online');

my %stream = map {
    my $s = sse_open('/api/notifications/stream',
                     { Authorization => 'Bearer ' . user_token($_) },
                     $ngx->port);
    is($s->read_event(5)->{event}, 'connected', "stream of $_ open");
    ($_ => $s);
} $friend_to, $message_to;


# --- events

my $friendship = 900000 + int(rand(90000));
my (%recipient, %frames);   # by entry id; by notification id and user

sub produce_friend {
    $friendship++;
    my $id = redis_cmd('XADD', 'friend.events', '*', 'key', $friendship,
        'value', "{\"timestamp\": \"2026-02-25T03:12:03.481220\", "
                 . "\"friendship_id\": $friendship, \"requester_id\": 1, "
                 . "\"requester_name\": \"someone\", "
                 . "\"addressee_id\": $friend_to, "
                 . "\"addressee_name\": \"u$friend_to\", "
                 . "\"__event_type__\": \"FriendRequestSent\"}");
    die "XADD: $id\n" unless $id =~ /^\d+-\d+$/;
    $recipient{$id} = $friend_to;
    return $id;
}

sub produce_message {
    my $mid = sprintf('%024x', int(rand(2**31)) * 65536 + $friendship++);
    my $id = redis_cmd('XADD', 'message.events', '*', 'key', $room,
        'value', "{\"timestamp\": \"2026-02-25T03:12:03.481220\", "
                 . "\"message_id\": \"$mid\", \"room_id\": $room, "
                 . "\"user_id\": $sender, \"username\": \"s\", "
                 . "\"content\": \"hello\", \"message_type\": \"text\", "
                 . "\"__event_type__\": \"MessageSent\"}");
    die "XADD: $id\n" unless $id =~ /^\d+-\d+$/;
    $recipient{$id} = $message_to;
    return $id;
}

# n of each kind; returns the entries
sub produce {
    my ($n) = @_;
    my @made;
    for (1 .. $n) {
        push @made, [ 'friend.events', produce_friend() ],
                    [ 'message.events', produce_message() ];
    }
    return @made;
}


sub wait_until {
    my ($cond, $timeout) = @_;
    my $until = time() + $timeout * $slow;
    until ($cond->()) {
        return 0 if time() > $until;
        sleep 0.2;
    }
    return 1;
}

# the frames that came on the streams so far
sub drain {
    my ($wait) = @_;
    for my $user (keys %stream) {
        while (my $ev = $stream{$user}->read_event($wait // 0.05)) {
            next unless ($ev->{event} // '') eq 'notification';
            $frames{ $ev->{id} }{$user}++;
        }
    }
}

sub frames_of {
    my (@made) = @_;
    return scalar grep { $frames{ notification_id(@$_) } } @made;
}

# wait until every entry given has its frame
sub wait_frames {
    my ($what, $timeout, @made) = @_;
    my $until = time() + $timeout * $slow;
    while (time() < $until) {
        drain(0.2);
        last if frames_of(@made) == @made;
    }
    is(frames_of(@made), scalar @made, "$what: all notified");
}

sub pending_of {
    my (@made) = @_;
    my %mine = map { $_->[1] => 1 } @made;
    my $n = 0;
    for my $s ('friend.events', 'message.events') {
        $n += grep { $mine{$_} }
              split /\n/, redis_cmd('XPENDING', $s, $group, '-', '+',
                                    '100000');
    }
    return $n;
}

# not acknowledged: pending, or not even handed out yet
sub unacked_of {
    my (@made) = @_;
    my (%pending, %last);
    for my $s ('friend.events', 'message.events') {
        $pending{$_} = 1
            for split /\n/, redis_cmd('XPENDING', $s, $group, '-', '+',
                                      '100000');
        $last{$s} = group_info($s, $group)->{'last-delivered-id'};
    }
    return scalar grep {
        my ($ms, $seq) = split /-/, $_->[1];
        my ($lms, $lseq) = split /-/, $last{ $_->[0] } // '0-0';
        $pending{ $_->[1] } || $ms > $lms || ($ms == $lms && $seq > $lseq);
    } @made;
}

# N1 of a user: every notification, by pages of 100
sub stored_of {
    my ($user) = @_;
    my (@all, $skip);
    $skip = 0;
    while (1) {
        my ($st, $body);
        for (1 .. 10) {
            ($st, $body) = api(GET => "/api/notifications?limit=100"
                                      . "&skip=$skip", user_token($user));
            last if $st == 200;
            sleep 0.5;
        }
        return undef unless $st == 200;
        push @all, map { $_->{id} } @{ $body->{notifications} };
        last unless $body->{has_more};
        $skip += 100;
    }
    return \@all;
}

# N1 holds exactly one notification per entry given, and nothing else
sub stored_exactly {
    my ($what, @made) = @_;
    for my $user ($friend_to, $message_to) {
        my %want = map { notification_id(@$_) => 1 }
                   grep { $recipient{ $_->[1] } == $user } @made;
        my $all = stored_of($user) // [];
        my %seen;
        $seen{$_}++ for @$all;
        is(scalar @$all, scalar keys %want,
           "$what: user $user has one notification per event");
        is(scalar(grep { ($seen{$_} // 0) == 1 } keys %want),
           scalar keys %want, "$what: ... each event's own, once");
        is(scalar(grep { !$want{$_} } keys %seen), 0,
           "$what: ... and nothing else");
    }
}


# --- presence

# user ids start again with every run's database, Redis keys stay
sub expire {
    my ($user) = @_;
    redis_cmd('DEL', "user:last_seen:$user->{id}");
    $user->{expired} = time();
    redis_cmd('PEXPIRE', "user:online:$user->{id}", 50);
    my $until = time() + 5 * $slow;
    sleep 0.05 until time() > $until
        || redis_cmd('EXISTS', "user:last_seen:$user->{id}") eq '1';
    ok(redis_cmd('EXISTS', "user:online:$user->{id}") eq '0'
       && redis_cmd('EXISTS', "user:last_seen:$user->{id}") eq '1',
       "user $user->{id}: the key expired, the monitor saw it");
}

# offline in MariaDB, last_seen_at (UTC) the time of the expiry
sub wait_offline {
    my ($what, $user, $timeout) = @_;
    my $row = '';
    wait_until(sub {
        $row = mysql_cmd("SELECT is_online, TIMESTAMPDIFF(SECOND, "
                         . "'1970-01-01 00:00:00', last_seen_at) "
                         . "FROM users WHERE id = $user->{id}");
        $row =~ /^0\t\d+$/;
    }, $timeout);
    like($row, qr/^0\t\d+$/, "$what: user $user->{id} offline");
    my ($seen) = $row =~ /\t(\d+)$/;
    $seen //= 0;
    ok($seen >= int($user->{expired})
       && $seen <= $user->{expired} + 2 * $slow,
       "$what: last_seen_at is the time of the expiry ("
       . ($seen - int($user->{expired})) . " s after)");
}


# --- before any outage

my @before = produce(10);
wait_frames('before the outages', 20, @before);
expire($people[0]);
wait_offline('before the outages', $people[0], 10);


# --- MariaDB restarted

my $log_from = $ngx->error_log_size;

stop_server('mariadb');

my @mysql_down = produce(10);
expire($people[1]);
expire($people[2]);

# someone online again before MariaDB is back: not to be marked offline
redis_cmd('SET', "user:online:$people[2]{id}", 'again', 'EX', 3600);

my @messages_down = grep { $_->[0] eq 'message.events' } @mysql_down;

wait_until(sub {
    $ngx->read_error_log($log_from) =~ /chat notify: MariaDB unavailable/
}, 10);
like($ngx->read_error_log($log_from),
     qr/chat notify: MariaDB unavailable/,
     'MariaDB down: the consumer cannot look rooms up');

# long enough for the retries to meet the outage a few times
sleep 3;

drain(0.5);
is(frames_of(@messages_down), 0, '... message events are not notified');
is(unacked_of(@messages_down), scalar @messages_down,
   '... nor acknowledged');

my $mysql_back = time();
start_server('mariadb');

my @mysql_after = produce(10);
expire($people[3]);

wait_frames('MariaDB back: events of its outage', 30, @messages_down);
wait_frames('MariaDB back: events after it', 30, @mysql_after);
wait_offline('expired while MariaDB was down', $people[1], 40);
cmp_ok($people[1]{expired}, '<', $mysql_back - 2,
       '... which was down for a while after the expiry');
wait_offline('expired after MariaDB came back', $people[3], 20);

is(mysql_cmd("SELECT is_online FROM users WHERE id = $people[2]{id}"), '1',
   'online again before MariaDB was back: still online');
like($ngx->read_error_log($log_from),
     qr/chat user: user $people[2]{id} is online again/,
     '... the retry saw the presence key');

like($ngx->read_error_log($log_from),
     qr/chat user: user $people[1]{id} offline stored at attempt \d+/,
     'the expiry during the outage was retried');

my @mysql_phase = (@before, @mysql_down, @mysql_after);
wait_until(sub { pending_of(@mysql_phase) == 0 }, 10);
is(pending_of(@mysql_phase), 0, 'MariaDB restart: nothing left pending');
stored_exactly('MariaDB restart', @mysql_phase);


# --- MongoDB restarted

my $keeps = server_keeps_data('mongo');

$log_from = $ngx->error_log_size;

stop_server('mongo');

my @mongo_down = produce(10);
expire($people[4]);

# presence needs no MongoDB
wait_offline('expired while MongoDB was down', $people[4], 20);

wait_until(sub { $ngx->read_error_log($log_from) =~ /chat notify: MongoDB/ },
           10);
like($ngx->read_error_log($log_from), qr/chat notify: MongoDB/,
     'MongoDB down: the consumer cannot store');
drain(0.5);
is(frames_of(@mongo_down), 0, '... nothing is notified');
is(unacked_of(@mongo_down), scalar @mongo_down, '... nor acknowledged');

start_server('mongo');

my @mongo_after = produce(10);
expire($people[5]);

wait_frames('MongoDB back: events of its outage', 40, @mongo_down);
wait_frames('MongoDB back: events after it', 30, @mongo_after);
wait_offline('expired after MongoDB came back', $people[5], 20);

my @all = (@mysql_phase, @mongo_down, @mongo_after);
wait_until(sub { pending_of(@all) == 0 }, 10);
stored_exactly($keeps ? 'in the end' : 'since the MongoDB restart',
               $keeps ? @all : (@mongo_down, @mongo_after));


# --- nothing lost, nothing doubled

drain(1);
is(pending_of(@all), 0, 'nothing left pending');

for my $s ('friend.events', 'message.events') {
    my ($n) = split /\n/, redis_cmd('XPENDING', $s, $group);
    is($n, 0, "the group has nothing pending on $s");
}

my %want = map { notification_id(@$_) => 1 } @all;
is(scalar(grep { $frames{$_} } keys %want), scalar @all,
   'every event notified on its stream');
is(scalar(grep { my $f = $frames{$_}; grep { $_ > 1 } values %$f }
          keys %frames),
   0, '... each once');
is(scalar(grep { !$want{$_} } keys %frames), 0, '... and nothing else');

my ($stored, $log) = (0, $ngx->read_error_log(0));
$stored += $1 while $log =~ /batch done: (\d+) stored/g;
cmp_ok($stored, '<=', scalar @all, "stored $stored times, none twice");

is(join('', grep { /\[(alert|crit|emerg)\]/ } split /^/, $log), '',
   'no alert in the error log');

$_->close for values %stream;

stop_nginx($ngx);

redis_cmd('XGROUP', 'DESTROY', $_, $group) for qw(friend.events message.events);
mysql_cmd("DELETE FROM chat_rooms WHERE id = $room");

done_testing();
