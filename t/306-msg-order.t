# One order of a room's messages for every writer: created_at, then _id.
# Twenty senders at once on two nginx instances get strictly increasing
# created_at in the order of seq; documents the original service stored
# (no seq, created_at between ours) take their place in pages,
# last_message and the replay after a Last-Event-ID.  Ids print exactly up
# to 2^63-1.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(sleep);

my $config = <<'EOF';
location /api/auth { chat_user; }
location /api/users { chat_user; chat_internal on; }
location /api/chat-rooms { chat_msg; }
location /api/messages { chat_msg; }
EOF

my @nodes = chat_nodes(2, $config, log_level => 'info');

$ChatStack::Base = $nodes[0]->url('');

# the room's documents as the original service writes them, through a
# MongoDB client of its own (pymongo)

my $MONGO = <<'EOF';
import datetime, json, sys
import pymongo
from bson import ObjectId

port, dbname, cmd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
db = pymongo.MongoClient('mongodb://127.0.0.1:%s/' % port,
                         serverSelectionTimeoutMS=5000)[dbname]

if cmd['op'] == 'insert':
    at = datetime.datetime(1970, 1, 1) \
         + datetime.timedelta(milliseconds=cmd['created_at'])
    doc = {'user_id': cmd['user_id'], 'room_id': cmd['room_id'],
           'room_type': 'private', 'content': cmd['content'],
           'message_type': 'text', 'file_url': None, 'file_name': None,
           'file_size': None, 'file_type': None, 'is_deleted': False,
           'deleted_at': None, 'deleted_by': None, 'is_edited': False,
           'edited_at': None, 'original_content': None,
           'created_at': at, 'updated_at': at}
    if 'id' in cmd:
        doc['_id'] = ObjectId(cmd['id'])
    print(str(db.messages.insert_one(doc).inserted_id))

elif cmd['op'] == 'by_seq':
    docs = db.messages.find({'room_id': cmd['room_id'],
                             'seq': {'$exists': True}}).sort('seq', 1)
    print(json.dumps([str(d['_id']) for d in docs]))
EOF

sub mongo {
    my ($cmd) = @_;
    open(my $fh, '-|', '/usr/bin/python3', '-c', $MONGO,
         ChatStack::env('MONGO_PORT', 27117), ChatStack::mongo_database(),
         json_encode($cmd))
        or die "python3: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    die "pymongo failed: $?\n" if $?;
    $out =~ s/\s+\z//;
    return $out;
}

# "YYYY-MM-DDTHH:MM:SS[.ffffff]" as microseconds since the epoch
sub micros {
    my ($t) = @_;
    my ($y, $mo, $d, $h, $mi, $s, $f) =
        $t =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$/
        or die "not a time: $t\n";
    require Time::Local;
    my $sec = Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y);
    return $sec * 1000000 + (defined $f ? substr($f . '00000', 0, 6) : 0);
}

# the ObjectId next to one, above or below
sub oid_step {
    my ($hex, $step) = @_;
    my $tail = hex(substr($hex, 16)) + $step;
    return substr($hex, 0, 16) . sprintf('%08x', $tail);
}

sub send_message {
    my ($node, $token, $rid, $content) = @_;
    my $res = http_request(POST => $node->url("/api/messages/$rid"),
                           { Authorization => "Bearer $token",
                             'Content-Type' => 'application/json' },
                           json_encode({ content => $content }), 10);
    return ($res->{status} // 0, json_decode($res->{body} // ''));
}

# the whole room, oldest first, through pages of 100 (C5)
sub all_pages {
    my ($token, $rid, $total) = @_;
    my @all;
    for (my $skip = $total - 100; $skip > -100; $skip -= 100) {
        my $limit = $skip < 0 ? 100 + $skip : 100;
        my ($st, $page) = api(GET => "/api/messages/$rid?limit=$limit"
                                     . "&skip=" . ($skip < 0 ? 0 : $skip),
                              $token);
        die "page: $st\n" unless $st == 200;
        push @all, @{ $page->{messages} };
    }
    return @all;
}

my $alice = register_user();
my $bob = register_user();
my $ta = login_user($alice);
my $tb = login_user($bob);

# ---- 20 senders x 25 messages into one room, on two nodes

{
    my ($st, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $ta);
    is($st, 200, 'a room for alice and bob');
    my $rid = $room->{id};

    my ($senders, $per) = (20, 25);
    my $t0 = Time::HiRes::time();
    my @jobs = map {
        my $k = $_;
        fork_job(sub {
            my $node = $nodes[$k % 2];
            my $token = $k % 4 < 2 ? $ta : $tb;
            my $bad = 0;
            for my $n (1 .. $per) {
                my ($s) = send_message($node, $token, $rid, "s$k-$n");
                $bad++ unless $s == 201;
            }
            return { bad => $bad };
        })
    } 0 .. $senders - 1;

    my $bad = 0;
    for (@jobs) { my $r = job_result($_); $bad += $r ? $r->{bad} : $per }
    is($bad, 0, "$senders senders x $per messages: every send answered 201");
    my $t1 = Time::HiRes::time();
    note(sprintf('%d sends in %.2f s', $senders * $per, $t1 - $t0));

    my @all = all_pages($ta, $rid, $senders * $per);
    is(scalar @all, $senders * $per, 'all of them in the pages');

    my ($inversions, $ties) = (0, 0);
    for my $i (1 .. $#all) {
        my ($a, $b) = (micros($all[$i - 1]{created_at}),
                       micros($all[$i]{created_at}));
        $inversions++ if $b < $a;
        $ties++ if $b == $a;
    }
    is($inversions, 0, 'page order: created_at never goes backwards');
    is($ties, 0, '... and never repeats');
    note(sprintf('the last created_at ahead of the clock by %.3f s',
                 micros($all[-1]{created_at}) / 1e6 - $t1));

    my %next;
    my $own = 0;
    for my $m (@all) {
        my ($k, $n) = $m->{content} =~ /^s(\d+)-(\d+)$/ or next;
        $own++ if $n == ($next{$k} // 0) + 1;
        $next{$k} = $n;
    }
    is($own, $senders * $per, "each sender's messages in its order");

    is_deeply(json_decode(mongo({ op => 'by_seq', room_id => $rid + 0 })),
              [map { $_->{id} } @all],
              'seq order is the page order');
}

# ---- a room both services wrote to

{
    ($alice, $bob) = (register_user(), register_user());
    ($ta, $tb) = (login_user($alice), login_user($bob));
    my ($st, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $ta);
    my $rid = $room->{id};
    ($st, $room) = api(GET => "/api/chat-rooms/check/"
                              . register_user()->{id}, $ta);
    my $other = $room->{id};
    my %id;
    my @expect;

    # ours: a send; theirs: a document with the created_at (ms) given
    my $ours = sub {
        my ($token, $content) = @_;
        my ($s, $m) = send_message($nodes[0], $token, $rid, $content);
        die "send $content: $s\n" unless $s == 201;
        $id{$content} = $m->{id};
        return int(micros($m->{created_at}) / 1000);
    };
    my $theirs = sub {
        my ($user, $content, $at, $oid) = @_;
        $id{$content} = mongo({ op => 'insert', room_id => $rid + 0,
                                user_id => $user->{id} + 0,
                                content => $content, created_at => $at,
                                defined $oid ? (id => $oid) : () });
    };

    # this room is new, so there is no message of it before the sends; a
    # page of the original's that is older than everything comes first

    my $t = $ours->($ta, 'a1');
    $theirs->($alice, 'o0', $t - 60000);
    $theirs->($bob, 'o1', $t + 1);
    sleep 0.05;
    $t = $ours->($tb, 'a2');
    $theirs->($alice, 'tie-before', $t, oid_step($id{a2}, -1));
    $theirs->($alice, 'tie-after', $t, oid_step($id{a2}, 1));
    sleep 0.05;
    $t = $ours->($ta, 'a3');
    $theirs->($bob, 'o3', $t + 5);
    sleep 0.05;
    $t = $ours->($tb, 'a4');
    $theirs->($alice, 'o4', $t + 2);

    # a message of another room between them changes nothing
    send_message($nodes[1], $ta, $other, 'elsewhere');

    @expect = qw(o0 a1 o1 tie-before a2 tie-after a3 o3 a4 o4);

    my ($s, $page) = api(GET => "/api/messages/$rid", $ta);
    is($s, 200, 'mixed room: a page');
    is_deeply([map { $_->{content} } @{ $page->{messages} }], \@expect,
              '... by created_at, then _id, seq or not');
    is($page->{total_count}, scalar @expect, '... counting them all');

    ($s, $page) = api(GET => "/api/messages/$rid?limit=3&skip=2", $ta);
    is_deeply([map { $_->{content} } @{ $page->{messages} }],
              [@expect[-5 .. -3]], '... and skip/limit cut that order');

    ($s, my $rooms) = api(GET => '/api/chat-rooms', $tb);
    my ($mine) = grep { $_->{id} == $rid } @{ $rooms // [] };
    is($mine && $mine->{last_message}{content}, 'o4',
       "last_message: the original's newer message");
    is($mine && $mine->{last_message}{id}, $id{o4}, '... by its id');

    ($s, my $unread) = api(GET => "/api/messages/room/$rid/unread-count",
                           $tb);
    is($unread->{unread_count}, scalar(grep { /^(a1|a3|o0|tie|o4)/ }
                                              @expect),
       "unread: alice's messages, both writers'");

    # replay after a Last-Event-ID: ours, theirs, a tie

    for my $from (qw(a1 o1 tie-before a2 o4)) {
        my ($at) = grep { $expect[$_] eq $from } 0 .. $#expect;
        my @want = @expect[$at + 1 .. $#expect];
        my $sse = sse_open("/api/messages/stream/$rid?access_token=$tb",
                           { 'Last-Event-ID' => $id{$from} },
                           $nodes[1]->port);
        my $first = $sse->read_event(3);
        my (@got, @ids);
        while (@got < @want) {
            my $ev = $sse->read_event(2) or last;
            next unless ($ev->{event} // '') eq 'new_message';
            push @got, json_decode($ev->{data})->{content};
            push @ids, $ev->{id};
        }
        is($first && $first->{event}, 'connected',
           "replay after $from: connected first");
        is_deeply(\@got, \@want, "... then every later message in order");
        is_deeply(\@ids, [map { $id{$_} } @want],
                  '... each with its message id as the event id');

        if ($from eq 'a2') {
            # the live frames follow the replay
            my ($ls, $lm) = send_message($nodes[0], $ta, $rid, 'live');
            $id{live} = $lm->{id};
            my $ev;
            while ($ev = $sse->read_event(3)) {
                last if ($ev->{event} // '') eq 'new_message';
            }
            is($ev && json_decode($ev->{data})->{content}, 'live',
               '... and a new message comes live after them');
            push @expect, 'live';
        }

        $sse->close;
    }
}

# ---- ids up to 2^63-1, exactly

for my $big ('9223372036854775807', '9007199254740993') {
    my $res = http_request(GET => $nodes[0]->url("/api/users/$big/exists"),
                           {}, undef, 5);
    is($res->{body}, qq({"user_id":$big,"exists":false}),
       "U11 of $big: the id printed as it came");
}

{
    # the schema's users.id is INT: the largest id a row can have
    my $max = '2147483647';
    mysql_cmd("DELETE FROM users WHERE id = $max; INSERT INTO users (id, "
        . "email, password_hash, username, is_online, is_active, "
        . "created_at, updated_at) VALUES ($max, 'max-$$\@example.com', "
        . "'x', 'max$$', 0, 1, UTC_TIMESTAMP(), UTC_TIMESTAMP())");
    my $res = http_request(GET => $nodes[0]->url("/api/users/$max/exists"),
                           {}, undef, 5);
    is($res->{body}, qq({"user_id":$max,"exists":true}),
       'U11 of a stored row');

    $res = http_request(POST => $nodes[0]->url('/api/users/batch'),
                        { 'Content-Type' => 'application/json' },
                        qq({"user_ids":[9223372036854775807,$max,)
                        . qq(9007199254740993]}), 5);
    like($res->{body}, qr/^\[\{"id":$max,/,
         'U10: ids from the body, exact (only the stored one found)');
    # the counter went to the end of INT with that row: back to the rows
    # left, so that the next files can still register users
    mysql_cmd("DELETE FROM users WHERE id = $max; "
              . "ALTER TABLE users AUTO_INCREMENT = 1");
    my ($s) = api(POST => '/api/auth/register', undef,
                  { email => "after-$$\@example.com", username => "after$$",
                    password => 'Secret#123' });
    is($s, 201, '... and registration works after it');
}

for my $big ('-9223372036854775807', '-9007199254740993') {
    my $res = http_request(POST => $nodes[0]->url('/api/messages/read'),
                           { Authorization => "Bearer $ta",
                             'Content-Type' => 'application/json' },
                           qq({"room_id":$big,"message_ids":["x"]}), 5);
    like($res->{body}, qr/"value":\Q$big\E[,}]/,
         "a body's $big echoed in the 422 as it came");
}

{
    my $res = http_request(POST => $nodes[0]->url('/api/users/batch'),
                           { 'Content-Type' => 'application/json' },
                           '{"user_ids":[9223372036854775808]}', 5);
    is($res->{status}, 422, 'beyond 2^63-1: a 422');
    like($res->{body}, qr/"int_parsing_size".*"input":9223372036854775808\b/,
         '... naming the number as it came');
}

for my $node (@nodes) {
    unlike($node->read_error_log(0), qr/\[(alert|crit|emerg)\]/,
           'no alert');
}

stop_nginx(@nodes);

done_testing();
