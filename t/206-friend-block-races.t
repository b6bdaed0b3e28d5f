# A block racing what the blocked side does (API.md 12, F9), 20 rounds
# each, a fresh pair every round, both requests let go at the same moment:
#
#   - A blocks B while B sends A a friend request: afterwards there is
#     never a live request between them, whichever answered first;
#   - A blocks B while B sends A a message.
#
# And in both: no notification to A from B made after the block.  "After"
# is decided as the consumer decides it (ngx_http_chat_notify_consumer.c):
# a notification's created_at is fixed when the consumer reads its event,
# before it asks for a block, so one that exists has a created_at before
# the block's commit, which is before this client received the block's
# 201.  A notification may exist only for a request or message that was
# accepted (201) while no block was committed yet; one that was refused
# (403) has none.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use POSIX ();
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);

my $rounds = 20;
my $group = "notifications_t$$";

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config() . "chat_notify_consumer on;\n"
                   . "chat_notify_group $group;\n",
    config      => "location /api/friends { chat_friend; }\n"
                   . "location /api/chat-rooms { chat_msg; }\n"
                   . "location /api/messages { chat_msg; }\n"
                   . "location /api/notifications { chat_notify; }\n");

$ChatStack::Base = $ngx->url('');

my $until = time() + 5;
sleep 0.1 until time() > $until
    || redis_cmd('XINFO', 'GROUPS', 'message.events') =~ /^\Q$group\E$/m;

# every job [method, path, user, body] in its own process; they all wait
# on one pipe and go when it closes; returns [{ status, body, sent, done }]
# in order, sent and done the client's clock around the request
sub at_once {
    my (@jobs) = @_;
    my @kids;

    pipe(my $go_r, my $go_w) or die "pipe: $!";

    for my $job (@jobs) {
        my ($method, $path, $user, $body) = @$job;
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";

        if ($pid == 0) {
            close $r;
            close $go_w;
            sysread($go_r, my $byte, 1);
            my $sent = time();
            my $res = http_request($method, $ngx->url($path),
                                   { Authorization => "Bearer $user->{token}",
                                     'Content-Type' => 'application/json' },
                                   json_encode($body), 15);
            print {$w} json_encode({ status => $res->{status} // 0,
                                     body => $res->{body} // '',
                                     sent => $sent, done => time() });
            close $w;
            POSIX::_exit(0);
        }

        close $w;
        push @kids, [$pid, $r];
    }

    close $go_r;
    close $go_w;

    my @results;

    for my $kid (@kids) {
        my ($pid, $fh) = @$kid;
        local $/;
        my $out = <$fh>;
        close $fh;
        waitpid($pid, 0);
        push @results, json_decode($out // '') // { status => 0 };
    }

    return @results;
}

# "2026-12-06T00:18:41.123000" (UTC) in epoch seconds
sub epoch {
    my ($iso) = @_;
    my ($y, $mo, $d, $h, $mi, $s, $f) =
        $iso =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?$/ or return;
    return timegm($s, $mi, $h, $d, $mo - 1, $y) + ($f // 0);
}

# A's notifications from B: [type, created_at (epoch), data]
sub notifications_from {
    my ($a, $b) = @_;
    my ($st, $body) = api(GET => '/api/notifications?limit=100',
                          $a->{token});
    die "N1: $st\n" unless $st == 200;
    return map { [$_->{type}, epoch($_->{created_at}), $_->{data}] }
           grep { ($_->{data}{sender_id} // $_->{data}{requester_id} // 0)
                  == $b->{id} } @{ $body->{notifications} };
}


# --- A blocks B while B asks A

my (@requests, %seen);

for (1 .. $rounds) {
    my ($a, $b) = (token_user('race'), token_user('race'));
    my ($block, $request) = at_once(
        [POST => '/api/friends/block', $a, { blocked_user_id => 0 + $b->{id} }],
        [POST => '/api/friends/request', $b, { user_id_2 => 0 + $a->{id} }]);
    push @requests, [$a, $b, $block, $request];
    $seen{"block $block->{status}, request $request->{status}"}++;
}

diag(join '; ', map { "$_: $seen{$_}" } sort keys %seen);

is(scalar(grep { $_->[2]{status} != 201 } @requests), 0,
   'every block: 201');
is(scalar(grep { $_->[3]{status} != 201 && $_->[3]{status} != 403 }
          @requests), 0, 'every request: 201 (before) or 403 (after)');

my $ids = join ',', map { ($_->[0]{id}, $_->[1]{id}) } @requests;
is(sql("SELECT COUNT(*) FROM friendships WHERE deleted_at IS NULL "
       . "AND user_id_1 IN ($ids) AND user_id_2 IN ($ids)"), 0,
   'never a live request between them afterwards');
is(sql("SELECT COUNT(*) FROM block_users WHERE user_id IN ($ids)"), $rounds,
   '... and every block stored');

for my $r (grep { $_->[3]{status} == 201 } @requests) {
    my $row = sql("SELECT deleted_at IS NOT NULL FROM friendships "
                  . "WHERE user_id_1 = $r->[1]{id} "
                  . "AND user_id_2 = $r->[0]{id}");
    is($row, 1, 'a request accepted before the block was ended by it');
}


# --- A blocks B while B writes to A

my @messages;
%seen = ();

for (1 .. $rounds) {
    my ($a, $b) = (token_user('race'), token_user('race'));
    my ($st, $room) = api(GET => "/api/chat-rooms/check/$a->{id}",
                          $b->{token});
    die "room: $st\n" unless $st == 200;
    my ($block, $message) = at_once(
        [POST => '/api/friends/block', $a, { blocked_user_id => 0 + $b->{id} }],
        [POST => "/api/messages/$room->{id}", $b, { content => 'quick' }]);
    push @messages, [$a, $b, $block, $message, $room];
    $seen{"block $block->{status}, message $message->{status}"}++;
}

diag(join '; ', map { "$_: $seen{$_}" } sort keys %seen);

is(scalar(grep { $_->[2]{status} != 201 } @messages), 0,
   'every block: 201');
is(scalar(grep { $_->[3]{status} != 201 && $_->[3]{status} != 403 }
          @messages), 0, 'every message: 201 (before) or 403 (after)');

# a message sent once the block has answered is refused
{
    my ($a, $b, $block, $message, $room) = @{ $messages[0] };
    my ($st) = api(POST => "/api/messages/$room->{id}", $b->{token},
                   { content => 'too late' });
    is($st, 403, 'a message after the block\'s answer: 403');
}

ok(group_settled($group), 'the consumer has settled every event');

my ($late, $kept, $refused_notified) = (0, 0, 0);

for my $r (@requests, @messages) {
    my ($a, $b, $block, $what) = @$r;

    for my $n (notifications_from($a, $b)) {
        $kept++;

        if ($n->[1] >= $block->{done}) {
            $late++;
            diag("notification $n->[0] to $a->{id} from $b->{id} made at "
                 . "$n->[1], the block answered at $block->{done}");
        }

        $refused_notified++ if $what->{status} == 403;
    }
}

is($late, 0, 'no notification to A from B made after the block');
is($refused_notified, 0, 'none for a request or message refused by it');
diag("notifications kept (accepted before the block): $kept");

done_testing();
