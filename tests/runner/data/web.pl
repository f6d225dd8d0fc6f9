# A test app for preview URLs (tests/runner/test_preview.py), in the perl that Debian minbase has: answers
# every HTTP request with what it received (request line, headers, body length), /redirect with a 302 to
# /elsewhere, and a WebSocket upgrade with an echo ("echo: " before text; binary as is).
use strict;
use IO::Socket::INET;
use Digest::SHA qw(sha1_base64);

my $port = shift;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 16, ReuseAddr => 1)
    or die "listen: $!";
$| = 1;
print "listening\n";
$SIG{CHLD} = 'IGNORE';
while (my $c = $s->accept) {
    if (fork) { close $c; next }
    binmode $c;
    my $head = "";
    while (defined(my $l = <$c>)) { $head .= $l; last if $l eq "\r\n" }
    my ($line, @h) = split /\r\n/, $head;
    my %h;
    for (@h) { my ($k, $v) = split /:\s*/, $_, 2; $h{lc $k} = $v }
    if (lc($h{upgrade} // "") eq "websocket") {
        my $accept = sha1_base64($h{"sec-websocket-key"} . "258EAFA5-E914-47DA-95CA-C5AB0DC85B11") . "=";
        print $c "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Accept: $accept\r\n\r\n";
        while (read($c, my $b2, 2) == 2) {
            my ($b0, $b1) = unpack "CC", $b2;
            my $len = $b1 & 127;
            if ($len == 126) { read($c, my $x, 2); $len = unpack "n", $x }
            elsif ($len == 127) { read($c, my $x, 8); $len = unpack "Q>", $x }
            read($c, my $mask, 4);
            my $data = "";
            read($c, $data, $len) if $len;
            my @m = unpack "C4", $mask;
            my @d = unpack "C*", $data;
            $d[$_] ^= $m[$_ % 4] for 0 .. $#d;
            $data = pack "C*", @d;
            my $op = $b0 & 15;
            if ($op == 8) { print $c pack("CCn", 0x88, 2, 1000); last }
            next if $op == 9 or $op == 10;
            $data = "echo: $data" if $op == 1;
            my $n = length $data;
            my $hdr = $n < 126 ? pack("CC", 0x80 | $op, $n)
                : $n < 65536 ? pack("CCn", 0x80 | $op, 126, $n) : pack("CCQ>", 0x80 | $op, 127, $n);
            print $c $hdr . $data;
        }
        exit 0;
    }
    my ($body, $got) = ("", 0);
    while ($got < ($h{"content-length"} // 0)) { my $n = read($c, $body, 65536) or last; $got += $n }
    if ($line =~ m{ /redirect }) {
        print $c "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        exit 0;
    }
    my $out = "$line\n" . join("", map { "$_: $h{$_}\n" } sort keys %h) . "body: $got\n";
    print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: app=1; Path=/; Domain=localhost\r\n"
        . "Content-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out";
    close $c;
    exit 0;
}
