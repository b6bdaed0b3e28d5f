# Chat service under concurrency and trouble: one room per pair however
# many ask at once; 20 senders of 25 messages each lose and duplicate
# nothing, and every page of the result is exact; read receipts, reactions
# and deletes at the same moment count once; the frames the room's streams
# get; MongoDB frozen: 503 where messages are needed, the rest and /health
# keep serving, and everything recovers after SIGCONT.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);

# messages of this run only: MariaDB's ids start again with every run
$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(),
    config      => 'location /api/ { chat_msg; }'
                 . ' location = /health { chat_service_name "Chat Service";'
                 . ' chat_health; }',
);

sub call {
    my ($method, $path, $user, $body, $timeout) = @_;
    my %h;
    $h{Authorization} = "Bearer $user->{token}" if $user;
    $h{'Content-Type'} = 'application/json' if defined $body;
    $body = json_encode($body) if ref $body;
    my $res = http_request($method, $ngx->url($path), \%h, $body,
                           $timeout // 15);
    return { status => $res->{status} // 0, body => $res->{body} // '',
             json => json_decode($res->{body} // ''),
             elapsed => $res->{elapsed} };
}

# each job (a code ref returning a list of results) in its own process
sub parallel {
    my (@jobs) = @_;
    my @running;

    for my $job (@jobs) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";

        if ($pid == 0) {
            close $r;
            my @out = map { +{ status => $_->{status}, body => $_->{body},
                               elapsed => $_->{elapsed} } } $job->();
            print {$w} json_encode(\@out);
            close $w;
            POSIX::_exit(0);
        }

        close $w;
        push @running, [$pid, $r];
    }

    my @results;

    for my $run (@running) {
        my $fh = $run->[1];
        local $/;
        my $out = json_decode(<$fh>) // [{ status => 0, body => '' }];
        waitpid($run->[0], 0);
        push @results, @$out;
    }

    return @results;
}

sub statuses {
    my %n;
    $n{$_->{status}}++ for @_;
    return join ' ', map { "$_:$n{$_}" } sort keys %n;
}

my ($A, $B, $C) = map { token_user('rc') } 1 .. 3;


# ---- one room per pair

my @res = parallel(map {
    my $who = $_ % 2 ? $A : $B;
    my $other = $_ % 2 ? $B : $A;
    sub { call(GET => "/api/chat-rooms/check/$other->{id}", $who) }
} 1 .. 10);

is(statuses(@res), '200:10', '10 C2 of one pair at once: all 200');

my %rooms = map { (json_decode($_->{body}) // {})->{id} // 0 => 1 } @res;
is(scalar(keys %rooms), 1, '... all the same room');
is(sql("SELECT COUNT(*) FROM chat_rooms WHERE user_1_id = $A->{id} "
       . "AND user_2_id = $B->{id}"), 1, '... one row');

my ($room) = keys %rooms;


# ---- 20 senders of 25 messages each

@res = parallel(map {
    my $n = $_;
    my $who = $n % 2 ? $A : $B;
    sub {
        map { call(POST => "/api/messages/$room", $who,
                   { content => "c$n-$_" }) } 1 .. 25
    }
} 1 .. 20);

is(statuses(@res), '201:500', '500 messages at once: all 201')
    or diag(join "\n", map { "$_->{status} $_->{body}" }
                       grep { $_->{status} != 201 } @res);

my $r = call(GET => "/api/messages/$room?limit=1", $A);
is($r->{json}{total_count}, 500, 'total_count is exactly 500');

# every page of 37, newest page first; each message exactly once
my (@pages, %seen, $dups);

for (my $skip = 0; ; $skip += 37) {
    $r = call(GET => "/api/messages/$room?limit=37&skip=$skip", $B);
    last unless $r->{status} == 200 && @{ $r->{json}{messages} };
    my $more = $skip + @{ $r->{json}{messages} } < 500 ? 1 : 0;
    is($r->{json}{has_more} ? 1 : 0, $more, "has_more at skip $skip");
    push @pages, $r->{json}{messages};
    $dups += $seen{$_->{id}}++ ? 1 : 0 for @{ $r->{json}{messages} };
    last if @pages > 20;
}

is(scalar(@pages), 14, '14 pages of at most 37');
is(scalar(keys %seen), 500, 'the pages hold 500 messages');
ok(!$dups, 'none of them twice');

# oldest to newest: each sender's messages in the order it sent them
my @all = map { @$_ } reverse @pages;
my (%last, $disorder);

for my $m (@all) {
    my ($n, $i) = $m->{content} =~ /^c(\d+)-(\d+)$/ or next;
    $disorder++ if ($last{$n} // 0) >= $i;
    $last{$n} = $i;
}

ok(!$disorder, "every sender's messages in its own order");
is(scalar(keys %last), 20, '... from all 20 senders');

$r = call(GET => "/api/messages/room/$room/unread-count", $A);
is($r->{body}, '{"unread_count":250}', "the other member's 250 are unread");


# ---- read receipts at the same moment count once

my @theirs = map { $_->{id} } grep { $_->{user_id} == $B->{id} } @all;

@res = parallel(map {
    sub { call(POST => '/api/messages/read', $A,
               { room_id => $room + 0, message_ids => \@theirs }) }
} 1 .. 8);

is(statuses(@res), '200:8', '8 C6 of the same 250 ids at once: all 200');

my $sum = 0;
$sum += (json_decode($_->{body}) // {})->{read_count} // 0 for @res;
is($sum, 250, '... 250 records between them');

$r = call(GET => "/api/messages/room/$room/unread-count", $A);
is($r->{body}, '{"unread_count":0}', '... and nothing is unread');


# ---- reactions, edits and deletes at the same moment

my $target = $all[-1];
my $mine = (grep { $_->{user_id} == $A->{id} } @all)[-1];

@res = parallel(map {
    sub { call(POST => "/api/messages/$target->{id}/reactions", $A,
               { emoji => 'ok' }) }
} 1 .. 10);

is(statuses(@res), '200:9 201:1', 'the same reaction 10 times: one 201');
$r = call(GET => "/api/messages/$target->{id}/reactions", $B);
is($r->{body}, qq({"message_id":"$target->{id}","reactions":[{"emoji":"ok",)
               . qq("count":1,"user_ids":[$A->{id}]}],"my_reactions":[]}),
   '... one reaction stored');

@res = parallel(map {
    my $n = $_;
    sub { call(PUT => "/api/messages/$mine->{id}", $A,
               { content => "edit $n" }) }
} 1 .. 10);

is(statuses(@res), '200:10', '10 edits at once: all 200');

@res = parallel(map {
    sub { call(DELETE => "/api/messages/$mine->{id}", $A) }
} 1 .. 10);

is(statuses(@res), '200:1 400:9', '10 deletes at once: one 200');
like($_->{body}, qr/"MESSAGE_ALREADY_DELETED"/, '... the others 400')
    for grep { $_->{status} == 400 } @res;

$r = call(GET => "/api/messages/$room?limit=1", $A);
is($r->{json}{total_count}, 499, 'total_count 499 after the delete');


# ---- bad input at the same moment: JSON 4xx, never 5xx

my @bad = (
    [POST => "/api/messages/$room", '{"content":'],
    [POST => "/api/messages/$room", '[]'],
    [POST => "/api/messages/$room", "{\"content\":\"\xff\"}"],
    [POST => "/api/messages/$room", '{"content":"' . ('x' x 301) . '"}'],
    [POST => "/api/messages/$room", '{"content":{"$where":"1"}}'],
    [POST => '/api/messages/99999999999999999999', '{"content":"x"}'],
    [POST => '/api/messages/read', '{"room_id":[],"message_ids":{}}'],
    [POST => '/api/messages/read', "{\"room_id\":$room,\"message_ids\":[]}"],
    [PUT => '/api/messages/%2500', '{"content":"x"}'],
    [GET => "/api/messages/$room?limit=1e3&skip=--1", undef],
    [GET => '/api/chat-rooms/check/-0', undef],
    [DELETE => "/api/messages/$target->{id}/reactions/%2F..%2F", undef],
);

@res = parallel(map {
    my $req = $_;
    sub { call($req->[0], $req->[1], $A, $req->[2]) }
} @bad);

is(scalar(grep { $_->{status} >= 400 && $_->{status} < 500 } @res),
   scalar(@bad), 'bad input in parallel: all 4xx')
    or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
is(scalar(grep { $_->{body} =~ /^\{"detail":/ } @res), scalar(@bad),
   '... each with a JSON detail')
    or diag(join "\n", map { "$_->{status} $_->{body}" } @res);


# ---- the frames the room's streams get (channel chat:room:<id>)

sub subscribe {
    my ($channel) = @_;
    my $pid = open(my $fh, '-|', 'redis-cli', '-p',
                   $ENV{TEST_NGINX_REDIS_PORT} // 16379, '--raw',
                   'SUBSCRIBE', $channel)
        or die "redis-cli: $!";
    my $buf = '';
    my $sel = IO::Select->new($fh);
    my $until = time + 5;

    # "subscribe", the channel, 1: the subscription is in place
    while ($buf !~ /^1$/m && time < $until) {
        sysread($fh, $buf, 4096, length $buf) if $sel->can_read(0.2);
    }

    return { pid => $pid, fh => $fh };
}

sub frames {
    my ($sub, $count) = @_;
    my ($buf, $sel) = ('', IO::Select->new($sub->{fh}));
    my $until = time + 5;
    my @f;

    while (time < $until) {
        sysread($sub->{fh}, $buf, 65536, length $buf) if $sel->can_read(0.2);
        @f = ();
        while ($buf =~ /(?:id: (\S+)\r\n)?event: (\w+)\r\ndata: ([^\r\n]*)\r\n\r\n/g) {
            push @f, { id => $1, event => $2, data => $3 };
        }
        last if @f >= $count;
    }

    kill 'TERM', $sub->{pid};
    close $sub->{fh};

    return @f;
}

{
    my $sub = subscribe("chat:room:$room");

    my $m = call(POST => "/api/messages/$room", $A,
                 { content => "caf\x{e9} \x{1f600}" });
    my $id = $m->{json}{id};
    call(POST => '/api/messages/read', $B,
         { room_id => $room + 0, message_ids => [$id, 'x'] });
    call(PUT => "/api/messages/$id", $A, { content => 'edited' });
    call(POST => "/api/messages/$id/reactions", $B, { emoji => 'ok' });
    call(DELETE => "/api/messages/$id/reactions/ok", $B);
    call(DELETE => "/api/messages/$id", $A);
    call(POST => "/api/messages/$room", $A, { content => ' ' });

    my @f = frames($sub, 6);

    is(join(' ', map { $_->{event} } @f),
       'new_message messages_read message_updated reaction_updated '
       . 'reaction_updated message_deleted',
       'one frame per change, in order, none for a refused send');

    my $ts = qr/"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?"/;

    is($f[0]{id}, $id, 'new_message: the id line is the message id');
    like($f[0]{data}, qr/^\{"id": "$id", "user_id": $A->{id}, "username": "$A->{name}", "room_id": $room, "content": "caf\\u00e9 \\ud83d\\ude00", "message_type": "text", "created_at": $ts, "is_deleted": false\}$/,
         '... its data as json.dumps writes it, the real username');
    ok(!defined $f[$_]{id}, "$f[$_]{event}: no id line") for 1 .. 5;
    like($f[1]{data}, qr/^\{"room_id": $room, "user_id": $B->{id}, "message_ids": \["$id", "x"\], "timestamp": $ts\}$/,
         'messages_read');
    like($f[2]{data}, qr/^\{"message_id": "$id", "room_id": $room, "content": "edited", "edited_at": $ts, "timestamp": $ts\}$/,
         'message_updated');
    like($f[3]{data}, qr/^\{"message_id": "$id", "room_id": $room, "user_id": $B->{id}, "emoji": "ok", "action": "added", "timestamp": $ts\}$/,
         'reaction_updated, added');
    like($f[4]{data}, qr/"action": "removed"/, 'reaction_updated, removed');
    like($f[5]{data}, qr/^\{"message_id": "$id", "room_id": $room, "deleted_by": $A->{id}, "timestamp": $ts\}$/,
         'message_deleted');
}


# ---- MongoDB frozen

sub health_stays_fast {
    my ($seconds, $name) = @_;
    my ($n, $bad, $slowest) = (0, 0, 0);
    my $until = time() + $seconds;

    while (time() < $until) {
        my $res = http_request(GET => $ngx->url('/health'), {}, undef, 2);
        $n++;
        $bad++ if ($res->{status} // 0) != 200;
        $slowest = $res->{elapsed} if $res->{elapsed} > $slowest;
        sleep 0.05;
    }

    ok($n >= 5 && $bad == 0, "$name: /health answered $n times, $bad bad");
    cmp_ok($slowest, '<', 0.25, "$name: slowest /health took $slowest s");
}

{
    my @jobs = (
        [POST => "/api/messages/$room", $A, { content => 'frozen' }, 503],
        [GET => "/api/messages/$room", $A, undef, 503],
        [GET => "/api/messages/room/$room/unread-count", $B, undef, 503],
        [GET => "/api/chat-rooms/$room", $A, undef, 503],
        [GET => '/api/chat-rooms', $B, undef, 503],
        [PUT => "/api/messages/$target->{id}", $B, { content => 'x' }, 503],
    );

    # answered by MariaDB alone, before MongoDB would be needed
    my @quick = (
        [GET => "/api/chat-rooms/$room", $C, undef, 403],
        [GET => "/api/messages/$room", $C, undef, 403],
        [GET => "/api/chat-rooms/check/$A->{id}", $A, undef, 422],
        [POST => "/api/messages/$room", $A, { content => '  ' }, 400],
        [GET => '/api/chat-rooms/2147483000', $A, undef, 404],
        [DELETE => '/api/messages/nope', $A, undef, 404],
    );

    freeze('mongo');

    my $t0 = time;

    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        close $rd;
        my @out = parallel(map {
            my $j = $_;
            sub { call($j->[0], $j->[1], $j->[2], $j->[3], 20) }
        } @jobs);
        print {$wr} json_encode(\@out);
        close $wr;
        POSIX::_exit(0);
    }

    close $wr;

    for my $q (@quick) {
        my $res = call($q->[0], $q->[1], $q->[2], $q->[3], 5);
        is($res->{status}, $q->[4], "mongo frozen: $q->[0] $q->[1] "
           . "is a $q->[4] at once");
        cmp_ok($res->{elapsed}, '<', 1, '... in under a second');
    }

    health_stays_fast(2, 'mongo frozen');

    my $out = do { local $/; json_decode(<$rd>) } // [];
    waitpid($pid, 0);

    thaw('mongo');

    for my $i (0 .. $#jobs) {
        my $res = $out->[$i] // { status => 0, body => '' };
        is($res->{status}, 503, "mongo frozen: $jobs[$i][0] $jobs[$i][1] "
           . "is a 503");
        like($res->{body}, qr/^\{"error":"database_error","message":/,
             '... a JSON body');
        cmp_ok($res->{elapsed} // 99, '<', 10, '... within the timeouts');
    }

    # recovery, without a restart
    my ($ok, $res) = (0);
    my $until = time + 20;

    while (time < $until) {
        $res = call(GET => "/api/messages/$room?limit=1", $A, undef, 10);
        last if $res->{status} == 200 && ($ok = 1);
        sleep 0.3;
    }

    ok($ok, 'after SIGCONT: pages again') or diag($res->{body});

    $res = call(POST => "/api/messages/$room", $A, { content => 'thawed' });
    is($res->{status}, 201, 'after SIGCONT: sends again');

    $res = call(GET => "/api/messages/$room?limit=1", $B);
    is($res->{json}{messages}[0]{content}, 'thawed',
       '... and the message is the newest');
}

stop_nginx($ngx);

done_testing();
