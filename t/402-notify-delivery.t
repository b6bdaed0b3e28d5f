# The event pipeline under failure: no event lost, none doubled.
#
#   - events produced while nginx is stopped are all processed after it
#     starts again;
#   - workers killed with SIGKILL while 500 events are produced: every
#     event still gives exactly one notification (what the dead workers
#     held is claimed after chat_notify_claim_idle);
#   - an entry taken by a consumer that never acknowledges it is claimed,
#     and an entry handed out again by hand (XCLAIM) after it was
#     processed gives no second notification and no second frame;
#   - entries claimed together are stored with one write, and claimed
#     again, none is notified twice;
#   - with MongoDB unreachable nothing is acknowledged, and another node
#     takes the entries over;
#   - two nginx instances on the same datastores: each event is processed
#     once in total, and the notification reaches the recipient's streams
#     on both instances.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use IO::Socket::INET;
use Sys::Hostname qw(hostname);
use Time::HiRes qw(time sleep);

# a consumer group of this file's own: a consumer of the shared group (the
# stack's nginx) would store the notifications in another database
my $group = "notifications_t$$";

my $http = chat_http_config() . "chat_notify_consumer on;\n"
           . "chat_notify_group $group;\n"
           . "chat_notify_claim_idle 1s;\n"
           . "chat_notify_batch 16;\n";
my $config = "location /api/notifications { chat_notify; }\n"
             . "location = /metrics { chat_metrics; }";

sub node {
    return start_nginx_with(workers => 2, master => 1,
                            main_config => chat_main_config(),
                            http_config => $http, config => $config);
}

my $base = 820000000 + int(rand(80000000));
my $friendship = 800000 + int(rand(100000));


sub request_value {
    my ($to) = @_;
    $friendship++;
    return "{\"timestamp\": \"2026-02-25T03:12:03.481220\", "
        . "\"friendship_id\": $friendship, \"requester_id\": 1, "
        . "\"requester_name\": \"someone\", \"addressee_id\": $to, "
        . "\"addressee_name\": \"u$to\", "
        . "\"__event_type__\": \"FriendRequestSent\"}";
}

# a FriendRequestSent to $to; returns the stream entry id
sub produce {
    my ($to) = @_;
    my $id = redis_cmd('XADD', 'friend.events', '*', 'key', $friendship + 1,
                       'value', request_value($to));
    die "XADD: $id\n" unless $id =~ /^\d+-\d+$/;
    return $id;
}

# every notification of a user, by pages of 100; a busy MongoDB may need
# a second try
sub all_of {
    my ($node, $user) = @_;
    my @all;
    my $skip = 0;
    while (1) {
        my ($st, $body);
        for (1 .. 5) {
            ($st, $body) = api(GET => $node->url("/api/notifications?limit=100&skip=$skip"),
                               user_token($user));
            last if $st == 200;
            sleep 0.5;
        }
        return undef unless $st == 200;
        push @all, @{ $body->{notifications} };
        last unless $body->{has_more};
        $skip += 100;
    }
    return \@all;
}

sub wait_total {
    my ($node, $user, $n, $timeout) = @_;
    $timeout //= 20;
    $timeout *= 4 if Test::Nginx::Chat::Process::valgrind_enabled();
    my $until = time() + $timeout;
    my $total = 0;
    while (time() < $until) {
        my ($st, $body) = api(GET => $node->url('/api/notifications?limit=1'),
                              user_token($user));
        $total = $body->{total_count} if $st == 200;
        return $total if $total >= $n;
        sleep 0.2;
    }
    return $total;
}

# exactly one notification per entry, nothing else
sub check_exactly {
    my ($node, $user, $entries, $what) = @_;
    my $all = all_of($node, $user) // [];
    my %want = map { notification_id('friend.events', $_) => 1 } @$entries;
    my %seen;
    $seen{ $_->{id} }++ for @$all;
    is(scalar @$all, scalar @$entries, "$what: one notification per event");
    is(scalar(grep { $seen{$_} == 1 } keys %want), scalar @$entries,
       "$what: each event's own, once");
    is(scalar(grep { !$want{$_} } keys %seen), 0, "$what: nothing else");
}

sub pending_of {
    my (@entries) = @_;
    my %mine = map { $_ => 1 } @entries;
    my @p = split /\n/, redis_cmd('XPENDING', 'friend.events', $group,
                                  '-', '+', '100000');
    return scalar grep { $mine{$_} } @p;
}

# entries a killed worker stored but did not acknowledge are claimed after
# chat_notify_claim_idle (1 s here): give that a few seconds
sub wait_not_pending {
    my (@entries) = @_;
    my $until = time() + 5;
    my $n;
    sleep 0.2 while ($n = pending_of(@entries)) && time() < $until;
    return $n;
}

sub workers_of {
    my ($node) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open(my $fh, '<', $stat) or next;
        my $line = <$fh> // '';
        close $fh;
        push @kids, $1 if $line =~ /^(\d+) \(nginx\) \S+ (\d+)/
                          && $2 == $node->pid;
    }
    return @kids;
}

# one Redis command over a socket of our own, reply as text
sub redis_raw {
    my (@args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_REDIS_PORT}
                                              // 16379)
        or die "redis: $!";
    print $s '*' . @args . "\r\n"
             . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    my $reply = '';
    $s->recv(my $buf, 65536);
    $reply .= $buf;
    close $s;
    return $reply;
}


# --- events produced while nginx is stopped

{
    my $node = node();
    wait_group($group, 'friend.events');
    $node->stop;

    my $user = $base + 1;
    my @entries = map { produce($user) } 1 .. 200;

    $node->launch;
    is(wait_total($node, $user, 200), 200,
       'stopped while 200 events came: all processed after the start');
    check_exactly($node, $user, \@entries, 'stop and start');

    is(wait_not_pending(@entries), 0, 'nothing left pending');

    # what /metrics tells of it: the group's numbers come from Redis every
    # few seconds
    my ($m, %topic) = (undef, (topic => 'friend.events'));
    my $until = time() + 15;
    while (time() < $until) {
        $m = read_metrics($node->url('/metrics'));
        last if defined metric_sum($m, 'chat_events_consumer_pending', %topic)
                && metric_sum($m, 'chat_events_consumer_pending', %topic) == 0;
        sleep 0.5;
    }
    cmp_ok(metric_sum($m, 'chat_events_consumed_total', %topic) // 0, '>=', 200,
           'metrics: the 200 events consumed');
    is(metric_sum($m, 'chat_events_consumer_pending', %topic), 0,
       'metrics: nothing pending in the group');
    # Redis knows the lag only while nothing was trimmed from the stream
    my $lag = metric_sum($m, 'chat_events_consumer_lag', %topic);
    ok(!defined $lag || $lag == 0,
       "metrics: nothing undelivered (${\($lag // 'not known')})");
    my $delay = metric_sum($m, 'chat_events_consumer_delay_seconds', %topic);
    ok(defined $delay && $delay >= 0 && $delay < 60,
       "metrics: the latest event's delay (${\($delay // 'none')} s)");

    stop_nginx($node);
}


# --- workers killed with SIGKILL while 500 events are produced (valgrind
# runs a single process: no worker to kill)

unless (Test::Nginx::Chat::Process::valgrind_enabled()) {
    my $node = node();
    wait_group($group, 'friend.events');

    my $user = $base + 2;
    my (@entries, $kills);

    for my $i (1 .. 500) {
        push @entries, produce($user);

        if ($i % 125 == 0 && $i < 500) {
            my @w = workers_of($node);
            $kills += kill 'KILL', @w;
        }
    }

    cmp_ok($kills, '>=', 6, "$kills workers killed on the way");

    is(wait_total($node, $user, 500, 30), 500,
       'workers killed while 500 events came: all processed');
    check_exactly($node, $user, \@entries, 'SIGKILL');

    is(wait_not_pending(@entries), 0, 'nothing left pending');

    like($node->read_error_log(0), qr/exited on signal 9/,
         'the workers did die');

    stop_nginx($node);
}


# --- a consumer that takes an entry and dies; then a redelivery by hand

{
    my $node = node();
    wait_group($group, 'friend.events');

    my $user = $base + 3;
    my $s = sse_open('/api/notifications/stream',
                     { Authorization => 'Bearer ' . user_token($user) },
                     $node->port);
    is($s->read_event(2)->{event}, 'connected', 'stream open');

    # the entry goes to "ghost" in the same breath as it is added, so no
    # live consumer gets it first
    my $value = request_value($user);
    my $reply = redis_raw('EVAL',
        "local id = redis.call('XADD', KEYS[1], '*', 'key', '1', "
        . "'value', ARGV[1]) "
        . "redis.call('XREADGROUP', 'GROUP', ARGV[2], 'ghost', "
        . "'COUNT', '100000', 'STREAMS', KEYS[1], '>') return id",
        1, 'friend.events', $value, $group);
    my ($entry) = $reply =~ /(\d+-\d+)/;
    ok($entry, "entry $entry taken by a consumer that will never ack it");
    my $nid = notification_id('friend.events', $entry // '0-0');

    my $t0 = time();
    my $ev = $s->read_event(5);
    is($ev->{id}, $nid, 'claimed from the dead consumer, then notified');
    cmp_ok(time() - $t0, '>=', 0.9, '... once it was idle long enough');
    like($node->read_error_log(0), qr/claimed \d+ entries of "friend\.events"/,
         '... which the log tells');

    my $all = all_of($node, $user);
    is(scalar @$all, 1, 'one notification');

    sleep 0.3;
    is(pending_of($entry), 0, 'acknowledged');

    # processed and acknowledged: handed out again by hand
    like(redis_cmd('XCLAIM', 'friend.events', $group, 'ghost', '0',
                   $entry, 'FORCE', 'JUSTID'), qr/\Q$entry\E/,
         'XCLAIM ... FORCE: pending again');

    my $until = time() + 5;
    sleep 0.1 while pending_of($entry) && time() < $until;
    is(pending_of($entry), 0, 'claimed and acknowledged again');

    ok(!defined $s->read_event(1), 'no second frame on the stream');
    $all = all_of($node, $user);
    is(scalar @$all, 1, 'still one notification');
    like($node->read_error_log(0),
         qr/entry \Q$entry\E of "friend\.events" delivered again/,
         'the redelivery was recognised');

    # into a live worker's hands this time, by its consumer name
    my ($worker) = workers_of($node);
    my $name = lc(hostname()) . '/' . ($worker // $node->pid);
    redis_cmd('XCLAIM', 'friend.events', $group, $name, '0',
              $entry, 'FORCE', 'JUSTID');
    like(redis_cmd('XPENDING', 'friend.events', $group, '-', '+', '10',
                   $name), qr/\Q$entry\E/,
         "pending for the live consumer $name");
    $until = time() + 5;
    sleep 0.1 while pending_of($entry) && time() < $until;
    is(pending_of($entry), 0, 'a redelivery of a processed entry settles');
    ok(!defined $s->read_event(0.5), 'no frame');
    is(scalar @{ all_of($node, $user) }, 1, 'and stays one notification');

    $s->close;
    stop_nginx($node);
}


# --- entries claimed together are stored together (one bulk write):
# each a notification of its own; claimed again after they were
# processed, each is recognised as stored and none is notified twice

{
    my $node = node();
    wait_group($group, 'friend.events');

    my $user = $base + 6;
    my $s = sse_open('/api/notifications/stream',
                     { Authorization => 'Bearer ' . user_token($user) },
                     $node->port);
    is($s->read_event(2)->{event}, 'connected', 'stream open');

    my $reply = redis_raw('EVAL',
        "local ids = {} "
        . "for i = 1, 3 do ids[i] = redis.call('XADD', KEYS[1], '*', "
        . "'key', '1', 'value', ARGV[i]) end "
        . "redis.call('XREADGROUP', 'GROUP', ARGV[4], 'ghost', "
        . "'COUNT', '100000', 'STREAMS', KEYS[1], '>') return ids",
        1, 'friend.events', (map { request_value($user) } 1 .. 3), $group);
    my @entries = $reply =~ /(\d+-\d+)/g;
    is(scalar @entries, 3, 'three entries taken by a consumer that never acks');

    my %want = map { notification_id('friend.events', $_) => 1 } @entries;
    my %got;
    for (1 .. 3) {
        my $ev = $s->read_event(5) // last;
        $got{ $ev->{id} }++;
    }
    is(scalar(grep { $got{$_} } keys %want), 3,
       'claimed together, each notified');
    like($node->read_error_log(0), qr/batch done: 3 stored/,
         '... stored in one batch');
    check_exactly($node, $user, \@entries, 'a batch of three');
    is(wait_not_pending(@entries), 0, 'all three acknowledged');

    like(redis_cmd('XCLAIM', 'friend.events', $group, 'ghost', '0',
                   @entries, 'FORCE', 'JUSTID'), qr/\Q$entries[2]\E/,
         'XCLAIM ... FORCE: all three pending again');
    is(wait_not_pending(@entries), 0, 'claimed and acknowledged again');
    like($node->read_error_log(0), qr/batch done: 0 stored, 3 existed/,
         '... in one batch, each recognised as stored');
    ok(!defined $s->read_event(1), 'no second frame on the stream');
    check_exactly($node, $user, \@entries, 'delivered again');

    $s->close;
    stop_nginx($node);
}


# --- MongoDB unreachable: nothing is acknowledged, a healthy node takes
# the entry over once the broken one is gone

{
    my $closed = Test::Nginx::Chat::free_port();
    (my $bad_http = $http)
        =~ s{mongodb://127\.0\.0\.1:\d+/}{mongodb://127.0.0.1:$closed/}
        or die "no chat_mongo line\n";
    my $bad = start_nginx_with(main_config => chat_main_config(),
                               http_config => $bad_http, config => $config);
    wait_group($group, 'friend.events');

    my $user = $base + 5;
    my $reply = redis_raw('EVAL',
        "local id = redis.call('XADD', KEYS[1], '*', 'key', '1', "
        . "'value', ARGV[1]) "
        . "redis.call('XREADGROUP', 'GROUP', ARGV[2], 'ghost', "
        . "'COUNT', '100000', 'STREAMS', KEYS[1], '>') return id",
        1, 'friend.events', request_value($user), $group);
    my ($entry) = $reply =~ /(\d+-\d+)/;

    # the broken node claims it, cannot store it, and keeps it
    my $until = time() + 15;
    sleep 0.2 until $bad->read_error_log(0) =~ /chat notify: MongoDB/
                    || time() > $until;
    like($bad->read_error_log(0), qr/chat notify: MongoDB: /,
         'the broken node tried and failed');
    sleep 1;
    is(pending_of($entry), 1, '... and did not acknowledge');
    stop_nginx($bad);

    my $node = node();
    is(wait_total($node, $user, 1), 1, 'a healthy node processed it');
    sleep 0.3;
    is(pending_of($entry), 0, '... and acknowledged it');
    is(scalar @{ all_of($node, $user) }, 1, 'one notification');
    stop_nginx($node);
}


# --- two instances on the same datastores

{
    my ($x, $y) = (node(), node());
    wait_group($group, 'friend.events');

    my $user = $base + 4;
    my $tok = user_token($user);
    my @streams = map {
        sse_open('/api/notifications/stream',
                 { Authorization => "Bearer $tok" }, $_->port)
    } $x, $y;
    $_->read_event(2) for @streams;
    sleep 0.2;

    my @entries;
    for (1 .. 200) {
        push @entries, produce($user);
        sleep 0.005;
    }

    is(wait_total($x, $user, 200), 200, 'two instances: 200 processed');
    check_exactly($y, $user, \@entries, 'two instances');

    my %want = map { notification_id('friend.events', $_) => 1 } @entries;

    for my $i (0, 1) {
        my %got;
        while (my $ev = $streams[$i]->read_event(2)) {
            $got{ $ev->{id} }++ if ($ev->{event} // '') eq 'notification';
            last if keys %got == 200;
        }
        is(scalar(grep { $got{$_} } keys %want), 200,
           "the stream on instance " . ($i ? 'Y' : 'X') . " got all 200");
        is(scalar(grep { $got{$_} > 1 } keys %got), 0, '... each once');
    }

    my @stored = map {
        my ($n, $log) = (0, $_->read_error_log(0));
        $n += $1 while $log =~ /batch done: (\d+) stored/g;
        $n;
    } $x, $y;

    cmp_ok($stored[0], '>', 0, "instance X stored $stored[0]");
    cmp_ok($stored[1], '>', 0, "instance Y stored $stored[1]");
    cmp_ok($stored[0] + $stored[1], '<=', 200, 'none of them twice');

    $_->close for @streams;

    for my $node ($x, $y) {
        is(join('', grep { /\[(alert|crit|emerg)\]/ }
                    split /^/, $node->read_error_log(0)),
           '', 'no alert in the error log');
    }

    stop_nginx($x, $y);
}

redis_cmd('XGROUP', 'DESTROY', $_, $group) for qw(friend.events message.events);

done_testing();
